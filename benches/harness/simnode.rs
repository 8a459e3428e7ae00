//! Simulated nodes (issue 14, as Kubernetes' kubemark hollow nodes): tokio tasks in the harness
//! process, each with its own API client (its own connections, as a real agent has), doing what
//! the agent does to the API and nothing to containerd:
//! - registers its Node through the agent's own `agent::node::register` (the labels, capacity,
//!   allocatable, conditions and addresses the agent reports) and renews its Lease through
//!   `agent::node::renew_lease` every 10 s (the period changes for the compressed hour);
//! - watches the DaemonSets and its own bound Pods (`spec.nodeName=NODE`) through kube-runtime's
//!   watcher, as `agent::watch` does (list, then watch from the resourceVersion);
//! - reports each pod bound to it running and ready (the status `core::status::pod_status`
//!   computes for running containers, written as the agent's podsync writes it: a merge patch of
//!   `pods/status` with the pod's uid), and deletes a pod the API is deleting
//!   (`gracePeriodSeconds: 0`, uid precondition), as the agent's final delete.
//!
//! Credential: the admin kubeconfig's token over TLS (a first cut; a node certificate per node
//! would add the Node authorizer's cost per request). Every mutating call is timed at the client
//! and kept per kind while recording is on.
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, RwLock};

use daemonset_agent::agent::config::{self as agent_config, FileConfig, Flags};
use daemonset_agent::agent::node;
use daemonset_agent::core::plan::{Observed, State};
use daemonset_agent::core::status::{pod_status, PodView};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;

use super::*;

/// The mutating calls a simulated node makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Write {
    Lease,
    Status,
    Delete,
}

/// What a node saw first of a tracked change: the DaemonSet's new generation (its watch), or its
/// own pod of the new template (its pod watch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    DaemonSet,
    Pod,
}

/// A change the harness times at every node: the DaemonSet `ds` at `generation`, whose pods run
/// `image`.
pub(super) struct Tracker {
    pub ds: String,
    pub generation: i64,
    pub image: String,
    pub tx: mpsc::UnboundedSender<(Seen, Instant)>,
}

/// What the fleet shares with the harness.
#[derive(Default)]
pub(super) struct Shared {
    /// Client-side latencies (ms) of the mutating calls while recording.
    samples: Mutex<Vec<(Write, u8, f32)>>,
    recording: std::sync::atomic::AtomicBool,
    pub errors: AtomicUsize,
    first_errors: Mutex<Vec<String>>,
    /// Lease renewals done (successful), since the fleet started.
    pub renewals: AtomicU64,
    /// Every successful mutating call, since the fleet started.
    pub writes: AtomicU64,
    /// The Lease renewal period (ms); changed for the compressed hour.
    period_ms: AtomicU64,
    period_changed: tokio::sync::Notify,
    /// Pods the nodes know bound to them, and those of them reported running and ready.
    pub live: AtomicUsize,
    pub ready: AtomicUsize,
    /// Nodes registered (Node, status and Lease written, watches started).
    pub registered: AtomicUsize,
    tracker: RwLock<Option<Arc<Tracker>>>,
}

impl Shared {
    pub fn new(period: Duration) -> Arc<Shared> {
        let s = Shared::default();
        s.period_ms
            .store(period.as_millis() as u64, Ordering::SeqCst);
        Arc::new(s)
    }

    pub fn set_period(&self, period: Duration) {
        self.period_ms
            .store(period.as_millis() as u64, Ordering::SeqCst);
        self.period_changed.notify_waiters();
    }

    fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms.load(Ordering::SeqCst))
    }

    /// Starts recording latencies afresh.
    pub fn record(&self, on: bool) {
        lock(&self.samples).clear();
        self.recording.store(on, Ordering::SeqCst);
    }

    /// The latencies recorded since `record(true)`, by kind (`lease`, `status`, `delete`,
    /// `all`), and by kind and server (`lease@0`, `all@1`: node i talks to server i % n).
    pub fn take(&self) -> HashMap<String, Vec<f64>> {
        let mut out: HashMap<String, Vec<f64>> = HashMap::new();
        for (w, server, ms) in std::mem::take(&mut *lock(&self.samples)) {
            let k = match w {
                Write::Lease => "lease",
                Write::Status => "status",
                Write::Delete => "delete",
            };
            for key in [
                k.to_string(),
                "all".to_string(),
                format!("{k}@{server}"),
                format!("all@{server}"),
            ] {
                out.entry(key).or_default().push(f64::from(ms));
            }
        }
        out
    }

    pub fn track(&self, t: Option<Tracker>) {
        *self.tracker.write().unwrap_or_else(|e| e.into_inner()) = t.map(Arc::new);
    }

    fn tracker(&self) -> Option<Arc<Tracker>> {
        self.tracker
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn first_errors(&self) -> Vec<String> {
        lock(&self.first_errors).clone()
    }

    fn done(&self, what: Write, server: u8, t0: Instant, r: &kube::Result<()>) {
        let took = t0.elapsed();
        match r {
            Ok(()) => {
                self.writes.fetch_add(1, Ordering::Relaxed);
                if what == Write::Lease {
                    self.renewals.fetch_add(1, Ordering::Relaxed);
                }
                if self.recording.load(Ordering::Relaxed) {
                    lock(&self.samples).push((what, server, ms(took) as f32));
                }
            }
            // gone or replaced meanwhile: the agent does not count these either
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => self.error(format!("{what:?}: {e}")),
        }
    }

    fn error(&self, e: String) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < 5 {
            lock(&self.first_errors).push(e);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A fleet of simulated nodes against one API (or several: node `i` uses `configs[i % n]`).
pub(super) struct Fleet {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Fleet {
    /// Starts `n` nodes named `PREFIX-00000`..., `starting` at a time registering; returns once
    /// every node registered (or fails after `timeout`). `labels` go on every Node.
    pub async fn start(
        configs: &[kube::Config],
        kubeconfig: &Path,
        prefix: &str,
        n: usize,
        labels: &[String],
        shared: Arc<Shared>,
        timeout: Duration,
    ) -> Result<Fleet> {
        let starting = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("{prefix}-{i:05}");
            let flags = Flags {
                node_name: Some(name.clone()),
                node_labels: labels.to_vec(),
                kubeconfig: Some(kubeconfig.to_path_buf()),
                node_api_listen: Some("127.0.0.1:10250".into()),
                ..Default::default()
            };
            let cfg = agent_config::merge(FileConfig::default(), &flags, &name)?;
            let server = (i % configs.len()) as u8;
            // the agent's stack: every request and watch of the node on one HTTP/2 connection
            let client = daemonset_agent::agent::client_for(&configs[usize::from(server)])?;
            let (shared, starting) = (shared.clone(), starting.clone());
            tasks.push(tokio::spawn(async move {
                let permit = starting.acquire_owned().await;
                sim_node(client, cfg, i, server, shared, permit.ok()).await
            }));
        }
        let fleet = Fleet { tasks };
        let deadline = Instant::now() + timeout;
        while shared.registered.load(Ordering::SeqCst) < n {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {n} simulated nodes registered in {timeout:?} (errors: {:?})",
                    shared.registered.load(Ordering::SeqCst),
                    shared.first_errors()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(fleet)
    }
}

/// One simulated node, for as long as the fleet lives.
async fn sim_node(
    client: kube::Client,
    cfg: agent_config::Config,
    index: usize,
    server: u8,
    shared: Arc<Shared>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let name = cfg.node_name.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), node::LEASE_NAMESPACE);
    // registration, retried as the agent's register_until_done
    let mut delay = Duration::from_millis(200);
    loop {
        let status = node::node_status("containerd://1.6.20", now_ms());
        match node::register(&nodes, &cfg, status).await {
            Ok(_) => break,
            Err(e) => {
                shared.error(format!("register {name}: {e}"));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    let t0 = Instant::now();
    let r = node::renew_lease(&leases, &name, cfg.node_lease_duration_seconds, now_ms()).await;
    shared.done(Write::Lease, server, t0, &r);
    let (status_tx, status_rx) = mpsc::unbounded_channel();
    let ready = ReadySet::default();
    let mut jobs = tokio::task::JoinSet::new();
    jobs.spawn(pod_sync(
        client.clone(),
        status_rx,
        shared.clone(),
        ready.clone(),
        index,
        server,
    ));
    jobs.spawn(watch_pods(
        client.clone(),
        name.clone(),
        status_tx,
        shared.clone(),
        ready,
    ));
    jobs.spawn(watch_daemonsets(client.clone(), shared.clone()));
    shared.registered.fetch_add(1, Ordering::SeqCst);
    drop(permit);
    // the Lease every period, the first at a random phase so the fleet is spread over it
    let phase = shared.period().mul_f64(rand_unit(index));
    tokio::time::sleep(phase).await;
    loop {
        let t0 = Instant::now();
        let r = node::renew_lease(&leases, &name, cfg.node_lease_duration_seconds, now_ms()).await;
        shared.done(Write::Lease, server, t0, &r);
        let changed = shared.period_changed.notified();
        tokio::select! {
            _ = tokio::time::sleep(shared.period()) => {}
            // a new period starts at once (spread again by the node's phase)
            _ = changed => tokio::time::sleep(shared.period().mul_f64(rand_unit(index))).await,
        }
    }
}

/// A fixed pseudo-random number in [0, 1) per node (the spread of its Lease renewals).
fn rand_unit(index: usize) -> f64 {
    let x = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    x as f64 / (1u64 << 53) as f64
}

/// The uids of a node's pods reported ready (by its pod sync; gone with their Delete event).
type ReadySet = Arc<Mutex<HashSet<String>>>;

/// What the pod watch asks of the node's pod sync.
enum Job {
    /// Report this pod running and ready.
    Run(Box<Pod>),
    /// The API is deleting this pod: its "containers" are gone, delete it for good.
    Finish {
        ns: String,
        name: String,
        uid: String,
    },
}

/// The node's own pods: `spec.nodeName=NODE`, listed then watched (kube-runtime's watcher, as
/// `agent::watch`); each new pod is reported running, each pod being deleted finished.
async fn watch_pods(
    client: kube::Client,
    node: String,
    jobs: mpsc::UnboundedSender<Job>,
    shared: Arc<Shared>,
    ready: ReadySet,
) {
    let pods: Api<Pod> = Api::all(client);
    let on_node = format!("spec.nodeName={node}");
    let stream =
        watcher::watcher(pods, watcher::Config::default().fields(&on_node)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // uid -> (reported, finishing)
    let mut known: HashMap<String, (bool, bool)> = HashMap::new();
    let mut tracked: Option<Arc<Tracker>> = None;
    while let Some(ev) = stream.next().await {
        let pod = match ev {
            Ok(Event::Apply(p) | Event::InitApply(p)) => p,
            Ok(Event::Delete(p)) => {
                let uid = p.uid().unwrap_or_default();
                if known.remove(&uid).is_some() {
                    shared.live.fetch_sub(1, Ordering::SeqCst);
                }
                if lock(&ready).remove(&uid) {
                    shared.ready.fetch_sub(1, Ordering::SeqCst);
                }
                continue;
            }
            Ok(Event::Init | Event::InitDone) => continue,
            Err(e) => {
                shared.error(format!("pod watch of {node}: {e}"));
                continue;
            }
        };
        let at = Instant::now();
        if let Some(t) = shared.tracker() {
            let first = !tracked.as_ref().is_some_and(|x| Arc::ptr_eq(x, &t));
            if first && image_of(&pod) == Some(t.image.as_str()) && owner_of(&pod) == Some(&t.ds) {
                let _ = t.tx.send((Seen::Pod, at));
                tracked = Some(t);
            }
        }
        let uid = pod.uid().unwrap_or_default();
        let entry = known.entry(uid.clone()).or_insert_with(|| {
            shared.live.fetch_add(1, Ordering::SeqCst);
            (false, false)
        });
        if pod.metadata.deletion_timestamp.is_some() {
            if !entry.1 {
                entry.1 = true;
                let _ = jobs.send(Job::Finish {
                    ns: pod.namespace().unwrap_or_default(),
                    name: pod.name_any(),
                    uid,
                });
            }
        } else if !entry.0 {
            entry.0 = true;
            if is_ready(&pod) {
                // ready already (a relist): counted, not written again
                if lock(&ready).insert(uid) {
                    shared.ready.fetch_add(1, Ordering::SeqCst);
                }
            } else {
                let _ = jobs.send(Job::Run(Box::new(pod)));
            }
        }
    }
}

fn image_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.containers.first()?.image.as_deref()
}

/// The DaemonSet that controls `pod`.
fn owner_of(pod: &Pod) -> Option<&String> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| &o.name)
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The agent's podsync for simulated pods: one write at a time, in order.
async fn pod_sync(
    client: kube::Client,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    shared: Arc<Shared>,
    ready: ReadySet,
    index: usize,
    server: u8,
) {
    let ip = format!(
        "10.{}.{}.{}",
        128 + index / 65536 % 64,
        index / 256 % 256,
        index % 256
    );
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Run(pod) => {
                let status = running_status(&pod, &ip);
                let (ns, name, uid) = (
                    pod.namespace().unwrap_or_default(),
                    pod.name_any(),
                    pod.uid().unwrap_or_default(),
                );
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                let patch = json!({"metadata": {"uid": uid}, "status": status});
                let t0 = Instant::now();
                let r = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(drop);
                shared.done(Write::Status, server, t0, &r);
                if r.is_ok() && lock(&ready).insert(uid) {
                    shared.ready.fetch_add(1, Ordering::SeqCst);
                }
            }
            Job::Finish { ns, name, uid } => {
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(kube::api::Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                let t0 = Instant::now();
                let r = api.delete(&name, &params).await.map(drop);
                shared.done(Write::Delete, server, t0, &r);
            }
        }
    }
}

/// The status the agent writes for `pod` once its containers run (and have no probes): through
/// the agent's own `core::status::pod_status`.
fn running_status(pod: &Pod, ip: &str) -> Value {
    let spec = pod.spec.clone().unwrap_or_default();
    let now = now_ms();
    let observed: Vec<Observed> = spec
        .containers
        .iter()
        .map(|c| Observed {
            id: format!("sim{}{}", pod.uid().unwrap_or_default(), c.name),
            name: c.name.clone(),
            restart_count: 0,
            state: State::Running,
            created_ms: now,
        })
        .collect();
    let view = PodView {
        spec: &spec,
        containers: observed.iter().map(|o| (o.name.clone(), o)).collect(),
        images: Default::default(),
        waiting: Default::default(),
        last_termination: Default::default(),
        previous_termination: Default::default(),
        host_ip: Some("127.0.0.1".into()),
        pod_ips: vec![ip.to_string()],
        start_ms: now,
        gates: Default::default(),
    };
    serde_json::to_value(pod_status(&view, None, now)).unwrap_or(Value::Null)
}

/// The DaemonSets, listed then watched (the agent's pre-pull seam); a tracked DaemonSet's new
/// generation is reported once.
async fn watch_daemonsets(client: kube::Client, shared: Arc<Shared>) {
    let api: Api<DaemonSet> = Api::all(client);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut tracked: Option<Arc<Tracker>> = None;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Apply(ds) | Event::InitApply(ds)) => {
                let at = Instant::now();
                if let Some(t) = shared.tracker() {
                    let first = !tracked.as_ref().is_some_and(|x| Arc::ptr_eq(x, &t));
                    if first
                        && ds.name_any() == t.ds
                        && ds.metadata.generation.unwrap_or(0) >= t.generation
                    {
                        let _ = t.tx.send((Seen::DaemonSet, at));
                        tracked = Some(t);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => shared.error(format!("daemonset watch: {e}")),
        }
    }
}
