//! The node daemon: registers its Node, watches DaemonSets, its Node and its Pods, and keeps
//! containerd running exactly the pods the DaemonSets want on this node.
//!
//! One controller loop owns the decisions: on a watch event, a container exit or a timer, it lists
//! our containers once, computes the desired pods (pure, `core::plan::desired_pods`) and hands each
//! pod's worker its latest desired state. Workers (`worker`) act on containerd; `podsync` mirrors
//! the pods into the API. Nothing on the container path waits for the API.
pub mod config;
pub mod localapi;
pub mod node;
pub mod podsync;
pub mod prober;
pub mod watch;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio::sync::{mpsc, watch as tokio_watch};

use crate::core::plan::{self, DesiredPod, PodKey};
use crate::runtime::{labels, ContainerStatus, Runtime};
use config::Config;
use worker::{Report, Work};

/// Connects to the API described by the kubeconfig file.
pub async fn client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read kubeconfig {}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("load kubeconfig {}", kubeconfig.display()))?;
    Ok(kube::Client::try_from(cfg)?)
}

/// A running agent, as tests and the binary hold it.
pub struct Agent {
    pub store: Arc<watch::Store>,
    client: kube::Client,
    runtime_version: String,
    cfg: tokio::sync::Mutex<Config>,
    shutdown: tokio_watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Applies a reloaded configuration (SIGHUP): new labels and taints go to the Node at once.
    /// Labels a previous configuration set and this one dropped stay on the Node (remove them
    /// with `kubectl label node NAME key-`).
    pub async fn reload(&self, new: Config) {
        let mut cfg = self.cfg.lock().await;
        if new.node_labels == cfg.node_labels && new.node_taints == cfg.node_taints {
            log::info!("configuration reloaded; nothing changed for the node");
            return;
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let status = node::node_status(&self.runtime_version, worker::now_ms());
        match node::register(&nodes, &new, status).await {
            Ok(n) => {
                log::info!(node = new.node_name.as_str(); "configuration reloaded; node labels and taints updated");
                self.store.update(|s| s.node = Some(n));
                *cfg = new;
            }
            Err(e) => {
                log::error!(error = e.to_string(); "configuration reloaded but the node could not be updated")
            }
        }
    }

    /// Stops the agent's loops. The containers keep running: a restarted agent adopts them.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Starts the agent with a runtime already connected. Returns once the Node is registered or
/// the API is found unreachable (the agent then runs from its cache and retries).
pub async fn start(cfg: Config, runtime: Arc<dyn Runtime>) -> anyhow::Result<Agent> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("create state dir {}", cfg.state_dir.display()))?;
    let client = client(&cfg.kubeconfig).await?;
    let store = Arc::new(watch::Store::default());
    if let Some(cached) = watch::load_cache(&cfg.state_dir) {
        log::info!(daemonsets = cached.daemonsets.len(); "loaded the last desired state from the cache");
        store.update(|s| {
            s.node = cached.node;
            s.daemonsets = cached.daemonsets;
        });
    }
    let (shutdown, shutdown_rx) = tokio_watch::channel(false);
    let ctx = Arc::new(worker::Context {
        prober: Arc::new(prober::NetProber {
            runtime: runtime.clone(),
        }),
        runtime,
        state_dir: cfg.state_dir.clone(),
        host_ip: None,
        started: Some(tokio::time::Instant::now()),
    });
    let (pod_tx, pod_rx) = mpsc::unbounded_channel();
    tokio::spawn(podsync::run(client.clone(), pod_rx));
    let agent_client = client.clone();
    let runtime_version = match ctx.runtime.version().await {
        Ok(v) => v,
        Err(e) => {
            log::warn!(error = crate::runtime::chain(&e); "containerd did not tell its version");
            "containerd://unknown".into()
        }
    };
    tokio::spawn(heartbeat(
        client.clone(),
        cfg.clone(),
        store.clone(),
        runtime_version.clone(),
    ));
    watch::spawn(client, &cfg.node_name, store.clone());
    let agent_cfg = tokio::sync::Mutex::new(cfg.clone());
    let controller = Controller {
        cfg,
        ctx,
        store: store.clone(),
        workers: BTreeMap::new(),
        requeue: BTreeMap::new(),
        pod_tx,
        ready_sent: false,
        view: localapi::PodsView::default(),
    };
    let synced_store = store.clone();
    let api = localapi::LocalApi {
        node: controller.cfg.node_name.clone(),
        state_dir: controller.cfg.state_dir.clone(),
        pods: controller.view.clone(),
        synced: Arc::new(move || synced_store.synced()),
    };
    tokio::spawn(async move {
        if let Err(e) = localapi::serve(api).await {
            log::error!(error = e.to_string(); "local API stopped");
        }
    });
    let task = tokio::spawn(controller.run(shutdown_rx));
    Ok(Agent {
        store,
        client: agent_client,
        runtime_version,
        cfg: agent_cfg,
        shutdown,
        task,
    })
}

/// Registers the Node (retrying until the API answers), then renews its Lease every 10 s and
/// re-posts its status every 5 min.
async fn heartbeat(
    client: kube::Client,
    cfg: Config,
    store: Arc<watch::Store>,
    runtime_version: String,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, node::LEASE_NAMESPACE);
    let mut delay = Duration::from_millis(200);
    loop {
        let status = node::node_status(&runtime_version, worker::now_ms());
        match node::register(&nodes, &cfg, status).await {
            Ok(n) => {
                log::info!(node = cfg.node_name.as_str(); "node registered");
                store.update(|s| {
                    if s.node.is_none() {
                        s.node = Some(n);
                    }
                });
                break;
            }
            Err(e) => {
                log::warn!(node = cfg.node_name.as_str(), error = e.to_string(); "node registration failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        if let Err(e) = node::renew_lease(&leases, &cfg.node_name, worker::now_ms()).await {
            log::debug!(error = e.to_string(); "lease renewal failed");
        }
        if n.is_multiple_of(30) {
            let status = node::node_status(&runtime_version, worker::now_ms());
            if let Err(e) = node::register(&nodes, &cfg, status).await {
                log::debug!(error = e.to_string(); "node status update failed");
            }
        }
    }
}

struct Controller {
    cfg: Config,
    ctx: Arc<worker::Context>,
    store: Arc<watch::Store>,
    workers: BTreeMap<PodKey, tokio_watch::Sender<Work>>,
    requeue: BTreeMap<PodKey, i64>,
    pod_tx: mpsc::UnboundedSender<podsync::Update>,
    ready_sent: bool,
    view: localapi::PodsView,
}

impl Controller {
    async fn run(mut self, mut shutdown: tokio_watch::Receiver<bool>) {
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
                    log::warn!(error = crate::runtime::chain(&e); "no exit events from containerd; relying on resync")
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
                .map(|at| Duration::from_millis((at - worker::now_ms()).max(0) as u64))
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
                    log::debug!(container_id = id; "container exited");
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
                    log::info!("agent stopping; containers keep running");
                    return;
                }
            }
            // drain whatever else is queued so one round covers it
            while let Ok(r) = reports.try_recv() {
                self.on_report(r);
            }
            if let Err(e) = self.round(&report_tx).await {
                log::warn!(error = crate::runtime::chain(e.as_ref()); "reconcile round failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.store.changed.notify_one();
            }
            let v = self.store.version.load(std::sync::atomic::Ordering::SeqCst);
            if v != cached_version {
                cached_version = v;
                let bytes = self.store.read(|s| s.synced.then(|| serde_json::to_vec(s)));
                match bytes {
                    Some(Ok(b)) => {
                        if let Err(e) = watch::save_cache(&self.cfg.state_dir, &b) {
                            log::warn!(error = e.to_string(); "could not write the desired-state cache");
                        }
                    }
                    Some(Err(e)) => {
                        log::warn!(error = e.to_string(); "could not serialize the desired-state cache")
                    }
                    None => {}
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
            } => {
                match requeue_at {
                    Some(at) => self.requeue.insert(key.clone(), at),
                    None => self.requeue.remove(&key),
                };
                if let Ok(mut v) = self.view.lock() {
                    v.insert(key, ((*pod).clone(), (*status).clone()));
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

    async fn round(&mut self, report_tx: &mpsc::UnboundedSender<Report>) -> anyhow::Result<()> {
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
        // computed under the store's lock: no copy of the DaemonSets, and it is pure and quick
        let (mut desired, synced) = self.store.read(|s| {
            let fallback;
            let node = match &s.node {
                Some(n) => n,
                None => {
                    fallback = node::desired_node(&self.cfg);
                    &fallback
                }
            };
            (
                plan::desired_pods(node, s.daemonsets.values(), &present),
                s.synced,
            )
        });
        plan::hold_for_old_revisions(&mut desired, &owners);
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
        let workers = &self.workers;
        let orphans: Vec<PodKey> = self.store.read(|s| {
            if !(s.synced && s.pods_synced) {
                return Vec::new();
            }
            s.pods
                .iter()
                .filter(|(k, p)| {
                    !workers.contains_key(k)
                        && p.metadata
                            .owner_references
                            .as_ref()
                            .is_some_and(|o| o.iter().any(|o| o.kind == "DaemonSet"))
                })
                .map(|(k, _)| k.clone())
                .collect()
        });
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
        Ok(())
    }
}
