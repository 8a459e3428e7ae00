//! The controller loop, which owns the agent's decisions, as the kubelet's pod workers are fed:
//! on a watch event, a container exit, a worker's report or a timer (a pod's requeue deadline,
//! the resync), it lists our containers once, takes the Pods the API binds to this node
//! (`core::plan::DesiredPod::from_api`) and hands each pod's worker its latest desired state. A
//! pod the API deletes is stopped by its worker; the round that sees it gone has podsync delete
//! it for good. It counts its rounds, so that tests and the local API can wait for a decision
//! instead of sleeping.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kube::ResourceExt;
use tokio::sync::{mpsc, watch as tokio_watch};
use tracing::Instrument as _;

use crate::agent::config::Config;
use crate::agent::worker::{self, Report, Work};
use crate::agent::{localapi, podsync, watch};
use crate::core::plan::{DesiredPod, PodKey};
use crate::runtime::{labels, ContainerStatus};

/// What the rounds have done so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Rounds completed since the agent started.
    pub rounds: u64,
    /// The DaemonSets the agent knew at the last completed round.
    pub daemonsets: Vec<Seen>,
}

/// A DaemonSet as a round saw it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    /// A pod of it is bound to this node (and not being deleted).
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
    /// The API uids of pods the API deletes whose containers are gone (podsync deletes them):
    /// no worker starts for them again.
    finished: BTreeSet<String>,
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
            finished: BTreeSet::new(),
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
                        tracing::warn!(error = %crate::runtime::chain(&e), "could not write the cache of the bound pods");
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
                // the API's Ready as the watch has it: podsync writes the status again when
                // another writer changed it (the node-lifecycle controller, while this agent was
                // silent), not when the watch has yet to bring back the agent's own write
                let api = self.store.pods().iter().find_map(|p| {
                    (p.metadata.uid.as_deref() == Some(pod.api_uid.as_str())).then(|| {
                        p.status
                            .as_ref()
                            .and_then(podsync::ready_of)
                            .map(str::to_string)
                    })
                });
                if let Some(ready) = api {
                    let (key, uid) = (pod.key.clone(), pod.api_uid.clone());
                    let _ = self
                        .pod_tx
                        .send(podsync::Update::ApiReady { key, uid, ready });
                }
                let _ = self.pod_tx.send(podsync::Update::Status(pod, status));
                changed
            }
            Report::Gone { key, api_uid } => {
                self.workers.remove(&key);
                self.requeue.remove(&key);
                if let Ok(mut v) = self.view.lock() {
                    v.remove(&key);
                }
                // a pod the API deletes, stopped: its final delete (the kubelet's status manager)
                let deleted_here = api_uid.as_ref().is_some_and(|uid| {
                    self.store.pods().iter().any(|p| {
                        p.metadata.uid.as_ref() == Some(uid)
                            && p.metadata.deletion_timestamp.is_some()
                    })
                });
                if let Some(uid) = api_uid {
                    // its objects and tokens are kept no longer (memory and the disk cache)
                    self.ctx.objects.forget(&uid);
                    if deleted_here {
                        self.finished.insert(uid.clone());
                    }
                    let _ = self.pod_tx.send(podsync::Update::Finished {
                        key,
                        uid,
                        delete: deleted_here,
                    });
                }
                true
            }
        }
    }

    /// One round; returns the DaemonSets the agent knows.
    async fn round(
        &mut self,
        round: u64,
        report_tx: &mpsc::UnboundedSender<Report>,
    ) -> anyhow::Result<Vec<Seen>> {
        let listed_at = tokio::time::Instant::now();
        tracing::debug!("round begins");
        let containers =
            tokio::time::timeout(Duration::from_secs(30), self.ctx.runtime.list_containers())
                .await
                .context("containerd did not list the containers in 30 s")??;
        let mut by_pod: BTreeMap<PodKey, Vec<ContainerStatus>> = BTreeMap::new();
        for c in containers {
            if c.labels.get(labels::MANAGED_BY).map(String::as_str)
                != Some(labels::MANAGED_BY_VALUE)
            {
                continue;
            }
            let Some(key) = worker::pod_key_of(&c) else {
                continue;
            };
            by_pod.entry(key).or_default().push(c);
        }
        let pods = self.store.pods();
        let known = self.store.pods_known();
        let synced = self.store.synced();
        // the pods whose final delete is under way: their API object may still be listed
        self.finished
            .retain(|uid| pods.iter().any(|p| p.metadata.uid.as_ref() == Some(uid)));
        let mut desired: BTreeMap<PodKey, DesiredPod> = BTreeMap::new();
        for p in &pods {
            let Some(mut d) = DesiredPod::from_api(p) else {
                continue;
            };
            if self.finished.contains(&d.api_uid) && !by_pod.contains_key(&d.key) {
                continue;
            }
            if let Some(found) = by_pod.get(&d.key) {
                d.uid = local_uid(&d, found, &self.cfg.node_name);
            }
            desired.insert(d.key.clone(), d);
        }
        let running_here: BTreeSet<String> = desired
            .values()
            .filter(|d| d.deletion.is_none())
            .filter_map(|d| d.owner.as_ref().map(|o| o.uid.clone()))
            .collect();

        let keys: BTreeSet<PodKey> = desired
            .keys()
            .chain(by_pod.keys())
            .chain(self.workers.keys())
            .cloned()
            .collect();
        for key in keys {
            // until the bound pods are known, containers no pod accounts for are left alone
            if !known && !desired.contains_key(&key) && !self.workers.contains_key(&key) {
                continue;
            }
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
        if !self.ready_sent {
            self.ready_sent = true;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!(
            "{} pods; API {}",
            self.workers.len(),
            if synced { "in sync" } else { "not reached yet" }
        ))]);
        let mut seen: Vec<Seen> = self
            .store
            .daemonsets()
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

/// The uid an agent before the pod pipeline gave the pod of a DaemonSet on a node (it derived its
/// pods itself, from the DaemonSet's uid, the node and the template hash). Only used to
/// recognise the containers such an agent started, which carry it: they are adopted, not
/// restarted, by the pod the API holds for them (the same name, made by that agent).
pub fn legacy_pod_uid(ds_uid: &str, node: &str, template_hash: &str) -> String {
    worker::uuid_shaped(&format!("{ds_uid}/{node}/{template_hash}"))
}

/// The uid `d`'s containers carry on this node: the API's, or that of a pod an agent before the
/// pod pipeline started for the same DaemonSet revision (see [`legacy_pod_uid`]).
fn local_uid(d: &DesiredPod, containers: &[ContainerStatus], node: &str) -> String {
    let label = |c: &ContainerStatus, l: &str| c.labels.get(l).cloned().unwrap_or_default();
    if containers
        .iter()
        .any(|c| label(c, labels::POD_UID) == d.api_uid)
    {
        return d.api_uid.clone();
    }
    if let Some(owner) = &d.owner {
        let legacy = legacy_pod_uid(&owner.uid, node, &d.template_hash);
        let theirs = containers.iter().any(|c| {
            label(c, labels::POD_UID) == legacy
                && label(c, labels::DAEMONSET_UID) == owner.uid
                && label(c, labels::TEMPLATE_HASH) == d.template_hash
        });
        if theirs {
            return legacy;
        }
    }
    d.api_uid.clone()
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
    use crate::runtime::TaskState;
    use futures::channel::mpsc as fmpsc;
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::{self, Event};
    use serde_json::json;

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
            Rig::start_with(cached, Vec::new())
        }

        /// A rig whose containerd already runs `containers` (an earlier agent's).
        fn start_with(cached: Option<watch::Cached>, containers: Vec<ContainerStatus>) -> Rig {
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
            for c in containers {
                rt.containers.lock().unwrap().insert(c.id.clone(), c);
            }
            let ctx = Arc::new(worker::Context {
                runtime: rt.clone(),
                prober: Arc::new(FakeProber::default()),
                state_dir: dir.path().to_path_buf(),
                host_ip: None,
                node: "host".into(),
                started: None,
                clock,
                events: crate::agent::events::Recorder::disabled(),
                objects: Arc::new(crate::agent::configsource::Unavailable),
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
                .filter(|c| matches!(c.state, TaskState::Running { .. }))
                .map(|c| c.id.clone())
                .collect()
        }

        fn calls(&self) -> Vec<String> {
            self.rt.calls.lock().unwrap().clone()
        }

        /// The final deletes podsync was asked for: (pod, uid).
        fn final_deletes(&self) -> Vec<(String, String)> {
            self.sent
                .iter()
                .filter_map(|u| match u {
                    podsync::Update::Finished {
                        key,
                        uid,
                        delete: true,
                    } => Some((key.name.clone(), uid.clone())),
                    _ => None,
                })
                .collect()
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

    fn node() -> Node {
        serde_json::from_value(json!({"metadata": {"name": NODE}})).unwrap()
    }

    /// The pod `name` (uid `uid`) of DaemonSet `mon` (uid `uid-mon`, revision `h1`), bound to the
    /// node, as the server's controller makes it.
    fn pod(name: &str, uid: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": uid,
                "labels": {"app": "mon", "controller-revision-hash": "h1"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "mon",
                    "uid": "uid-mon", "controller": true}]},
            "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "main", "image": "busybox:v1"}]}
        }))
        .unwrap()
    }

    /// `p` being deleted by the API since `at_ms` with a grace period of `grace` seconds.
    fn deleting(mut p: Pod, at_ms: i64, grace: i64) -> Pod {
        let at = chrono::DateTime::from_timestamp_millis(at_ms + grace * 1000).unwrap();
        p.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!(at.to_rfc3339())).unwrap());
        p.metadata.deletion_grace_period_seconds = Some(grace);
        p
    }

    fn daemonset() -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "mon", "namespace": "default", "uid": "uid-mon", "generation": 3},
            "spec": {"selector": {"matchLabels": {"app": "mon"}},
                "template": {"metadata": {"labels": {"app": "mon"}},
                    "spec": {"containers": [{"name": "main", "image": "busybox:v1"}]}}}
        }))
        .unwrap()
    }

    fn key(name: &str) -> PodKey {
        PodKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn container_of(name: &str, restarts: u32) -> String {
        worker::container_id(&key(name), "main", restarts)
    }

    /// A running container `main` of pod `name`, labelled as an earlier agent labelled them.
    fn found(name: &str, labels: &[(&str, &str)]) -> ContainerStatus {
        let mut l: BTreeMap<String, String> = [
            (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
            (labels::POD_NAMESPACE, "default"),
            (labels::POD_NAME, name),
            (labels::CONTAINER_NAME, "main"),
            (labels::RESTART_COUNT, "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        l.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ContainerStatus {
            id: container_of(name, 0),
            image: "busybox:v1".into(),
            labels: l,
            state: TaskState::Running { pid: 1 },
            created_at: BASE_MS / 1000 - 60,
        }
    }

    /// A pod bound to the node runs at once; the DaemonSets are reported with it. The API deletes
    /// it: its container is stopped and removed, and its final delete goes to podsync with its
    /// uid, all without waiting for a resync.
    #[tokio::test(start_paused = true)]
    async fn a_bound_pod_runs_and_a_deleted_one_stops_then_is_deleted() {
        let mut rig = Rig::start(None);
        send(&rig.node, list(vec![node()]));
        send(&rig.daemonsets, list(vec![daemonset()]));
        send(&rig.pods, list(vec![pod("mon-abcde", "u1")]));
        rig.until("the pod running", |r| !r.running().is_empty())
            .await;
        assert_eq!(rig.running(), [container_of("mon-abcde", 0)]);
        assert_eq!(rig.rt.runs.lock().unwrap()[0].1, BASE_MS);
        rig.until("the pod reported", |r| {
            r.view.lock().unwrap().contains_key(&key("mon-abcde"))
                && r.progress
                    .borrow()
                    .daemonsets
                    .first()
                    .is_some_and(|d| d.runs_here)
        })
        .await;
        assert!(rig.sent.iter().any(|u| matches!(u,
            podsync::Update::Status(d, _) if d.key == key("mon-abcde") && d.api_uid == "u1")));

        send(
            &rig.pods,
            [Event::Apply(deleting(pod("mon-abcde", "u1"), BASE_MS, 5))],
        );
        rig.until("the pod gone and its final delete sent", |r| {
            r.rt.containers.lock().unwrap().is_empty() && !r.final_deletes().is_empty()
        })
        .await;
        assert_eq!(
            rig.final_deletes(),
            [("mon-abcde".to_string(), "u1".to_string())]
        );
        let calls = rig.calls();
        assert!(
            calls.contains(&format!("stop {}", container_of("mon-abcde", 0))),
            "{calls:?}"
        );
        assert!(
            calls.contains(&"remove-sandbox u1".to_string()),
            "{calls:?}"
        );
        assert!(!rig.view.lock().unwrap().contains_key(&key("mon-abcde")));
        assert_eq!(
            rig.now_ms(),
            BASE_MS,
            "all of it without waiting for a resync"
        );
        // the API still lists it until the delete lands: no worker starts it again
        send(&rig.node, [Event::Apply(node())]);
        rig.until("a round after", |r| r.progress.borrow().rounds > 0)
            .await;
        assert_eq!(rig.rt.run_ids().len(), 1, "{:?}", rig.rt.run_ids());
        assert!(!rig.progress.borrow().daemonsets[0].runs_here);
    }

    /// An exit is a round: the first restart comes at once; the second waits out the 10 s
    /// back-off, to the millisecond, on the worker's requeue deadline (the resync is an hour).
    #[tokio::test(start_paused = true)]
    async fn exits_are_rounds_and_restarts_wait_for_the_back_off() {
        let mut rig = Rig::start(None);
        send(&rig.node, list(vec![node()]));
        send(&rig.pods, list(vec![pod("crash-abcde", "u1")]));
        rig.until("running", |r| r.running().len() == 1).await;
        tokio::time::advance(Duration::from_millis(1_500)).await;
        rig.rt.exit(&container_of("crash-abcde", 0), 1).await;
        rig.until("restarted", |r| r.rt.run_ids().len() == 2).await;
        let runs = rig.rt.runs.lock().unwrap().clone();
        assert_eq!(runs[1], (container_of("crash-abcde", 1), BASE_MS + 1_500));

        tokio::time::advance(Duration::from_millis(500)).await;
        rig.rt.exit(&container_of("crash-abcde", 1), 1).await;
        rig.until("restarted again", |r| r.rt.run_ids().len() == 3)
            .await;
        let runs = rig.rt.runs.lock().unwrap().clone();
        assert_eq!(
            runs[2],
            (container_of("crash-abcde", 2), BASE_MS + 1_500 + 10_000)
        );
    }

    /// Offline: the cached bound pods run before any list; the first complete list then replaces
    /// the cache (the pod was deleted meanwhile: it goes) and the cache written is what the API
    /// said.
    #[tokio::test(start_paused = true)]
    async fn an_offline_start_runs_from_the_cache_until_the_first_list() {
        let cached = watch::Cached {
            node: Some(node()),
            pods: Some(
                [(
                    "default/offline-abcde".to_string(),
                    pod("offline-abcde", "u1"),
                )]
                .into(),
            ),
        };
        let mut rig = Rig::start(Some(cached));
        rig.until("the cached pod running", |r| !r.running().is_empty())
            .await;
        assert_eq!(rig.running(), [container_of("offline-abcde", 0)]);
        assert!(!rig.store.synced());
        assert!(
            !watch::cache_path(rig.dir.path()).exists(),
            "no list: the cache stays"
        );

        send(&rig.node, list(vec![node()]));
        send(&rig.pods, list(vec![]));
        rig.until("the pod gone with the API's word", |r| {
            r.rt.containers.lock().unwrap().is_empty()
        })
        .await;
        assert!(rig.store.synced());
        assert!(rig.final_deletes().is_empty(), "gone from the API already");
        rig.until("the cache written", |r| {
            watch::load_cache(r.dir.path()).is_some_and(|c| c.pods.is_some_and(|p| p.is_empty()))
        })
        .await;
    }

    /// Without a cache that knows the bound pods (none, or one of an agent before the pod
    /// pipeline), containers no pod accounts for are left alone until the Pods are listed.
    #[tokio::test(start_paused = true)]
    async fn unknown_containers_wait_for_the_list_of_the_bound_pods() {
        let mut rig = Rig::start_with(None, vec![found("left-abcde", &[(labels::POD_UID, "u0")])]);
        send(&rig.node, list(vec![node()]));
        rig.until("a round with the node listed", |r| {
            r.progress.borrow().rounds > 0
        })
        .await;
        assert_eq!(rig.running(), [container_of("left-abcde", 0)]);
        assert!(rig.calls().is_empty(), "{:?}", rig.calls());
        send(&rig.pods, list(vec![]));
        rig.until("the container stopped once the pods were listed", |r| {
            r.rt.containers.lock().unwrap().is_empty()
        })
        .await;
    }

    /// Containers an agent before the pod pipeline started carry the uid it derived; the pod the
    /// API holds for them (same name, its own uid) adopts them: nothing stops, nothing starts,
    /// and new incarnations keep that uid (their sandbox).
    #[tokio::test(start_paused = true)]
    async fn containers_of_the_previous_agent_are_adopted() {
        let legacy = legacy_pod_uid("uid-mon", NODE, "h1");
        let old = found(
            "mon-x7k2p",
            &[
                (labels::POD_UID, legacy.as_str()),
                (labels::DAEMONSET_NAMESPACE, "default"),
                (labels::DAEMONSET_NAME, "mon"),
                (labels::DAEMONSET_UID, "uid-mon"),
                (labels::TEMPLATE_HASH, "h1"),
                (worker::GRACE_LABEL, "5"),
            ],
        );
        let mut rig = Rig::start_with(None, vec![old]);
        send(&rig.node, list(vec![node()]));
        send(&rig.pods, list(vec![pod("mon-x7k2p", "api-uid")]));
        rig.until("the pod reported", |r| {
            r.view.lock().unwrap().contains_key(&key("mon-x7k2p"))
        })
        .await;
        assert!(
            rig.calls().is_empty(),
            "adopted, untouched: {:?}",
            rig.calls()
        );
        let reported = rig.view.lock().unwrap()[&key("mon-x7k2p")].pod.clone();
        assert_eq!(
            (reported.uid.as_str(), reported.api_uid.as_str()),
            (legacy.as_str(), "api-uid")
        );
        // it dies: the next incarnation joins the same sandbox, under the same uid
        rig.rt.exit(&container_of("mon-x7k2p", 0), 1).await;
        rig.until("restarted", |r| r.running().len() == 1).await;
        let c = rig.rt.containers.lock().unwrap()[&container_of("mon-x7k2p", 1)].clone();
        assert_eq!(c.labels[labels::POD_UID], legacy);
        assert!(
            !rig.calls().iter().any(|c| c.starts_with("sandbox")),
            "{:?}",
            rig.calls()
        );
    }

    /// A pod deleted and made again under the same name (another uid) is another pod: the earlier
    /// one's containers and sandbox go, the new one starts afresh.
    #[tokio::test(start_paused = true)]
    async fn a_pod_made_again_under_its_name_replaces_the_earlier_one() {
        let mut rig = Rig::start(None);
        send(&rig.node, list(vec![node()]));
        send(&rig.pods, list(vec![pod("bare", "u1")]));
        rig.until("running", |r| r.running().len() == 1).await;
        send(&rig.pods, [Event::Apply(pod("bare", "u2"))]);
        rig.until("the new pod running", |r| {
            r.rt.containers.lock().unwrap().values().any(|c| {
                c.labels.get(labels::POD_UID).map(String::as_str) == Some("u2")
                    && matches!(c.state, TaskState::Running { .. })
            })
        })
        .await;
        let calls = rig.calls();
        assert!(
            calls.contains(&"remove-sandbox u1".to_string()),
            "{calls:?}"
        );
        assert_eq!(rig.running().len(), 1);
    }
}
