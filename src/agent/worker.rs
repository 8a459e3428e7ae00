//! Pod workers, as the kubelet has them: one task per pod owns that pod's containers, so a pod
//! whose image cannot be pulled (or whose mount is bad) waits in its own back-off and never holds
//! up the others. The controller sends each worker the latest desired pod and observed containers;
//! updates that arrive while a worker is busy coalesce into one. A pod the API deletes is stopped
//! within what is left of its grace period (SIGTERM, then SIGKILL), its containers together.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::PodStatus;
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use crate::agent::clock::Clock;
use crate::agent::configsource::{ObjectSource, PodRef};
use crate::agent::events::{self, Recorder};
use crate::agent::hooks::{self, HookTarget};
use crate::agent::prober::{Prober, Target};
use crate::core::plan::{self, Action, Backoff, DesiredPod, Observed, PodKey, State, Want};
use crate::core::podactions;
use crate::core::probe::{self as probe, ContainerProbes, Kind, Outcome};
use crate::core::status::{self, PodView, Termination, Waiting};
use crate::runtime::{
    labels, ContainerRequest, ContainerStatus, PodMeta, PodSandbox, PortMapping, PullPolicy,
    Runtime, RuntimeError, SandboxInfo, TaskState,
};

/// Bounds on one runtime call, so that a hung shim or containerd call cannot hold a pod's worker
/// forever: past them the worker logs, gives up this attempt and the next round retries.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// `f`, or a runtime error naming `op` once `limit` has passed.
async fn bounded<T>(
    op: &'static str,
    id: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, RuntimeError>>,
) -> Result<T, RuntimeError> {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| {
        Err(RuntimeError::Timeout {
            op,
            id: id.to_string(),
            after: limit,
        })
    })
}

/// The label holding the grace period, so a pod gone from the API still stops gracefully.
pub const GRACE_LABEL: &str = "io.daemonset-agent.termination-grace-seconds";

/// What a worker is told on each round.
#[derive(Debug, Clone, Default)]
pub struct Work {
    pub desired: Option<DesiredPod>,
    pub observed: Vec<ContainerStatus>,
    /// When the controller began listing `observed`. A worker that acted after that ignores the
    /// work: the list may not show what it just did (the controller sends a fresh one).
    pub listed_at: Option<tokio::time::Instant>,
    /// The controller round that listed `observed`, echoed in the status reports made from it.
    pub round: u64,
}

/// What a worker reports back.
#[derive(Debug)]
pub enum Report {
    /// The pod's status after a sync, and when the worker wants to look again (unix ms).
    Status {
        key: PodKey,
        pod: Box<DesiredPod>,
        status: Box<PodStatus>,
        requeue_at: Option<i64>,
        /// Containers were started or removed: the controller should resync soon.
        changed: bool,
        /// The round whose listing this status was computed from (`Work::round`).
        round: u64,
    },
    /// The pod is gone from the node (containers and sandbox removed); the worker ended.
    /// `api_uid`: the API uid of the last pod it ran, if it ran one.
    Gone {
        key: PodKey,
        api_uid: Option<String>,
    },
}

pub struct Context {
    /// The node's name, a field of every pod's span.
    pub node: String,
    pub runtime: Arc<dyn Runtime>,
    pub prober: Arc<dyn Prober>,
    pub state_dir: PathBuf,
    pub host_ip: Option<String>,
    /// When the agent started. Probes created within one period of it first wait a random part
    /// of their period, as the kubelet's do after a restart, so that a restarted agent does not
    /// probe every adopted container at once. None: no such wait.
    pub started: Option<tokio::time::Instant>,
    /// Where wall-clock times and back-off deadlines come from.
    pub clock: Clock,
    /// The ConfigMaps, Secrets and tokens of the pods' volumes and env.
    pub objects: Arc<dyn ObjectSource>,
    /// The kubelet's events (`agent::events`); recording never waits.
    pub events: Recorder,
}

/// The reference of events about container `name` of `d`.
fn about(d: &DesiredPod, name: &str) -> crate::core::events::Involved {
    events::pod_ref(&d.key.namespace, &d.key.name, &d.api_uid, name)
}

/// containerd id of one incarnation of a container: readable when short enough, else hashed.
pub fn container_id(pod: &PodKey, container: &str, restart_count: u32) -> String {
    let id = format!(
        "{}_{}_{}_{}",
        pod.namespace, pod.name, container, restart_count
    );
    if id.len() <= 76 {
        return id;
    }
    let h = uuid_shaped(&format!("{}/{}/{container}", pod.namespace, pod.name));
    format!("{}_{}", &h[..23], restart_count)
}

/// SHA-256 of `input`, rendered as a UUID (8-4-4-4-12 hex digits): a stable id from a name.
pub fn uuid_shaped(input: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(input.as_bytes());
    let h = hex::encode(&d[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The plan's view of one of our containers.
pub fn observed(c: &ContainerStatus) -> Option<Observed> {
    let name = c.labels.get(labels::CONTAINER_NAME)?.clone();
    Some(Observed {
        id: c.id.clone(),
        name,
        restart_count: c
            .labels
            .get(labels::RESTART_COUNT)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        state: match c.state {
            TaskState::Created => State::Created,
            TaskState::Running { .. } => State::Running,
            TaskState::Stopped {
                exit_code,
                exited_at,
            } => State::Exited {
                code: exit_code,
                at_ms: exited_at.map(|s| s * 1000),
            },
        },
        created_ms: c.created_at * 1000,
    })
}

/// What the runtime needs to know of a pod's sandbox.
fn pod_sandbox(d: &DesiredPod) -> PodSandbox {
    PodSandbox {
        uid: d.uid.clone(),
        namespace: d.key.namespace.clone(),
        name: d.key.name.clone(),
        host_network: d.spec.host_network.unwrap_or(false),
        host_ipc: d.spec.host_ipc.unwrap_or(false),
        labels: pod_labels(d),
        port_mappings: PortMapping::of(&d.spec),
    }
}

/// The labels of every container of the pod (and of its sandbox's record).
fn pod_labels(d: &DesiredPod) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED_BY, labels::MANAGED_BY_VALUE.to_string()),
        (labels::POD_NAMESPACE, d.key.namespace.clone()),
        (labels::POD_NAME, d.key.name.clone()),
        (labels::POD_UID, d.uid.clone()),
        (GRACE_LABEL, d.grace_seconds().to_string()),
    ])
    .into_iter()
    .chain(d.owner.iter().flat_map(|o| {
        [
            (labels::DAEMONSET_NAMESPACE, o.namespace.clone()),
            (labels::DAEMONSET_NAME, o.name.clone()),
            (labels::DAEMONSET_UID, o.uid.clone()),
        ]
    }))
    .chain((!d.template_hash.is_empty()).then(|| (labels::TEMPLATE_HASH, d.template_hash.clone())))
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The pod a container belongs to, from its labels.
pub fn pod_key_of(c: &ContainerStatus) -> Option<PodKey> {
    Some(PodKey {
        namespace: c.labels.get(labels::POD_NAMESPACE)?.clone(),
        name: c.labels.get(labels::POD_NAME)?.clone(),
    })
}

/// The grace period an earlier agent labelled containers with (30 s when none says).
fn grace_label(containers: &[ContainerStatus]) -> i64 {
    containers
        .iter()
        .find_map(|c| c.labels.get(GRACE_LABEL).and_then(|g| g.parse().ok()))
        .unwrap_or(plan::DEFAULT_GRACE_SECONDS)
}

/// Stops a container (SIGTERM, SIGKILL after `grace_seconds`; at once when 0) and removes it.
async fn remove(ctx: &Context, id: &str, grace_seconds: i64) {
    let rt = &ctx.runtime;
    if grace_seconds > 0 {
        let grace = Duration::from_secs(grace_seconds as u64);
        let stop = rt.stop_container(id, grace);
        if let Err(e) = bounded("stop", id, grace + CALL_TIMEOUT, stop).await {
            tracing::warn!(container_id = id, error = %crate::runtime::chain(&e), "stop failed");
        }
    }
    match bounded("remove", id, CALL_TIMEOUT, rt.remove_container(id)).await {
        Ok(()) => {
            tracing::info!(
                container_id = id,
                grace_secs = grace_seconds,
                "container removed"
            )
        }
        Err(e) => {
            tracing::warn!(container_id = id, error = %crate::runtime::chain(&e), "remove failed")
        }
    }
}

/// Stops a container as `remove` does, its preStop hook (if `hook` has one) run first within the
/// grace period, which the hook's time is taken out of.
async fn remove_with_hook(ctx: &Context, id: &str, grace_seconds: i64, hook: Option<HookTarget>) {
    let grace = match &hook {
        Some(t) => hooks::pre_stop(ctx.prober.as_ref(), t, grace_seconds).await,
        None => grace_seconds,
    };
    remove(ctx, id, grace).await
}

/// The objects the pod uses, now (an API error: the container waits as for a failed mount).
async fn pod_objects(
    ctx: &Context,
    d: &DesiredPod,
    id: &str,
) -> Result<crate::runtime::configvol::PodObjects, RuntimeError> {
    let pod = PodRef {
        namespace: &d.key.namespace,
        name: &d.key.name,
        uid: &d.api_uid,
        spec: &d.spec,
    };
    ctx.objects
        .objects(&pod)
        .await
        .map_err(|e| RuntimeError::InvalidSpec {
            id: id.to_string(),
            source: crate::runtime::spec::SpecError::Mount(crate::runtime::chain(&e)),
        })
}

/// The running pod's configMap, secret and projected volumes brought up to date with their
/// objects (the kubelet's periodic remount; subPath mounts keep the file they mounted).
async fn refresh_volumes(ctx: &Context, d: &DesiredPod, sandbox: &SandboxInfo) {
    use crate::runtime::configvol;
    let vols: Vec<_> = d
        .spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| configvol::is_config_volume(v))
        .collect();
    if vols.is_empty() {
        return;
    }
    let Ok(objects) = pod_objects(ctx, d, &d.key.name).await else {
        return;
    };
    let host_ips: Vec<String> = ctx.host_ip.clone().into_iter().collect();
    let facts = crate::runtime::downward::PodFacts {
        name: &d.key.name,
        namespace: &d.key.namespace,
        uid: &d.api_uid,
        labels: &d.labels,
        annotations: &d.annotations,
        spec: &d.spec,
        host_ips: &host_ips,
        pod_ips: if d.spec.host_network.unwrap_or(false) {
            &host_ips
        } else {
            &sandbox.ips
        },
        node: Default::default(),
    };
    let gid = d
        .spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    for vol in vols {
        let Ok(Some(files)) = configvol::volume_files(vol, &objects, &facts) else {
            continue;
        };
        let dir = sandbox.pod_dir.join("volumes").join(&vol.name);
        let name = vol.name.clone();
        let written =
            tokio::task::spawn_blocking(move || configvol::write_atomic(&dir, &files, gid)).await;
        match written {
            Ok(Ok(true)) => tracing::info!(volume = name.as_str(), "volume updated"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(volume = name.as_str(), error = %e, "volume update failed")
            }
            Err(e) => tracing::warn!(volume = name.as_str(), error = %e, "volume update failed"),
        }
    }
}

struct Worker {
    key: PodKey,
    ctx: Arc<Context>,
    backoff: BTreeMap<String, Backoff>,
    waiting: BTreeMap<String, Waiting>,
    last_termination: BTreeMap<String, Termination>,
    previous_termination: BTreeMap<String, Termination>,
    images: BTreeMap<String, (String, String)>,
    sandbox: Option<SandboxInfo>,
    /// The last desired pod seen, kept to stop its containers gracefully once it is gone.
    last: Option<DesiredPod>,
    status: Option<PodStatus>,
    start_ms: i64,
    acted_at: Option<tokio::time::Instant>,
    /// The probes of each running container incarnation, by container name.
    probes: BTreeMap<String, ProbeRun>,
    /// Probe tasks say here that a result changed.
    probe_tx: mpsc::UnboundedSender<()>,
    /// What the last status was computed from, to recompute it when a probe result changes.
    last_report: Option<(DesiredPod, Vec<Observed>, Option<i64>)>,
    /// The round of the last work synced.
    round: u64,
    /// The sidecars seen started when the last probe result came (one that starts asks for a
    /// round: the next init container may start).
    started_seen: std::collections::BTreeSet<String>,
}

/// The probe tasks of one container incarnation and their shared state. Dropping it stops them.
struct ProbeRun {
    id: String,
    state: Arc<std::sync::Mutex<ContainerProbes>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The kill for a failed liveness or startup probe was done.
    killed: bool,
}

impl Drop for ProbeRun {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The span a pod's worker syncs in: POD, DAEMONSET and NODE on every event inside.
pub fn pod_span(key: &PodKey, daemonset: Option<&str>, node: &str) -> tracing::Span {
    tracing::info_span!("pod", pod = %key, daemonset, node)
}

/// Starts a worker for `key`; it runs until its pod is gone.
pub fn spawn(
    key: PodKey,
    ctx: Arc<Context>,
    reports: mpsc::UnboundedSender<Report>,
) -> watch::Sender<Work> {
    let (tx, mut rx) = watch::channel(Work::default());
    let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
    let start_ms = ctx.clock.now_ms();
    let mut w = Worker {
        key,
        ctx,
        backoff: BTreeMap::new(),
        waiting: BTreeMap::new(),
        last_termination: BTreeMap::new(),
        previous_termination: BTreeMap::new(),
        images: BTreeMap::new(),
        sandbox: None,
        last: None,
        status: None,
        start_ms,
        acted_at: None,
        probes: BTreeMap::new(),
        probe_tx,
        last_report: None,
        round: 0,
        started_seen: Default::default(),
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let work = rx.borrow_and_update().clone();
                    // boxed: the sync future is large and lives only while the pod is worked
                    // on; an idle worker then costs a few hundred bytes, not the whole state
                    // machine
                    let span = w.span(&work);
                    if Box::pin(w.sync(work, &reports).instrument(span)).await {
                        let api_uid = w.last.as_ref().map(|d| d.api_uid.clone());
                        let _ = reports.send(Report::Gone { key: w.key.clone(), api_uid });
                        return;
                    }
                }
                Some(()) = probe_rx.recv() => {
                    while probe_rx.try_recv().is_ok() {}
                    let span = w.span(&Work::default());
                    Box::pin(w.on_probe(&reports).instrument(span)).await;
                }
            }
        }
    });
    tx
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One probe of one container incarnation, run on its period until aborted (prober.worker).
struct ProbeTask {
    kind: Kind,
    handler: Result<probe::Handler, String>,
    timing: probe::Timing,
    target: Target,
    state: Arc<std::sync::Mutex<ContainerProbes>>,
    prober: Arc<dyn Prober>,
    changed: mpsc::UnboundedSender<()>,
    /// Startup succeeded: readiness runs at once instead of waiting for its tick.
    wake: Arc<tokio::sync::Notify>,
    /// A wait before the first run (see `Context::started`).
    jitter: Duration,
    clock: Clock,
    /// Failed probes are events (`Unhealthy`) about the container.
    events: Recorder,
    about: crate::core::events::Involved,
}

impl ProbeTask {
    async fn run(self) {
        let period = Duration::from_millis(self.timing.period_ms.max(1) as u64);
        let timeout = Duration::from_millis(self.timing.timeout_ms.max(1) as u64);
        if !self.jitter.is_zero() {
            tokio::time::sleep(self.jitter).await;
        }
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut told_error = false;
        loop {
            let readiness = self.kind == Kind::Readiness;
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.wake.notified(), if readiness => {}
            }
            if !lock(&self.state).due(self.kind, self.clock.now_ms()) {
                continue;
            }
            let outcome = match &self.handler {
                Ok(h) => self.prober.probe(&self.target, h, timeout).await,
                Err(e) => Outcome::Error(e.clone()),
            };
            events::probe_outcome(&self.events, &self.about, self.kind.as_str(), &outcome);
            match &outcome {
                Outcome::Success | Outcome::Warning(_) => {}
                Outcome::Failure(m) => {
                    tracing::info!(output = m.as_str(), "probe failed")
                }
                Outcome::Error(m) if !told_error => {
                    told_error = true;
                    tracing::warn!(
                        error = m.as_str(),
                        "probe cannot run; its result is ignored"
                    )
                }
                Outcome::Error(_) => {}
            }
            let (changed, started_now) = {
                let mut st = lock(&self.state);
                let before = st.gates().started;
                let changed = st.record(self.kind, &outcome);
                (changed, !before && st.gates().started)
            };
            if started_now {
                self.wake.notify_one();
            }
            if changed {
                tracing::debug!(outcome = ?outcome, "probe result changed");
                if self.changed.send(()).is_err() {
                    return;
                }
            }
        }
    }
}

impl Worker {
    /// The span of one sync: the events inside carry the pod, its DaemonSet and the node.
    fn span(&self, work: &Work) -> tracing::Span {
        let daemonset = match work.desired.as_ref().or(self.last.as_ref()) {
            Some(d) => d.owner.as_ref().map(|o| o.name.as_str()),
            // a pod left from before an agent restart, going: its containers' labels say
            None => work
                .observed
                .iter()
                .find_map(|c| c.labels.get(labels::DAEMONSET_NAME).map(String::as_str)),
        };
        pod_span(&self.key, daemonset, &self.ctx.node)
    }

    /// One sync of the pod; true when the pod is gone for good.
    async fn sync(&mut self, work: Work, reports: &mpsc::UnboundedSender<Report>) -> bool {
        if let (Some(listed), Some(acted)) = (work.listed_at, self.acted_at) {
            if listed < acted {
                return false;
            }
        }
        let now = self.ctx.clock.now_ms();
        self.round = work.round;
        let mut changed = false;
        let mut found = work.observed;
        if let Some(d) = &work.desired {
            // containers of an earlier pod of the same name (another uid) go first
            let stale: Vec<ContainerStatus>;
            (stale, found) = found.into_iter().partition(|c| {
                c.labels
                    .get(labels::POD_UID)
                    .is_some_and(|uid| *uid != d.uid)
            });
            if !stale.is_empty() || self.last.as_ref().is_some_and(|l| l.uid != d.uid) {
                tracing::info!(
                    uid = d.uid.as_str(),
                    "a new pod of this name: the earlier one goes"
                );
                self.remove_stale(&stale).await;
                self.forget(now);
                changed = true;
            }
            self.last = Some(d.clone());
        }
        let observed: Vec<Observed> = found.iter().filter_map(observed).collect();
        // incarnations this worker did not start (the agent restarted): their back-off from the
        // record, so that a crash loop neither restarts early nor starts over at 10 s
        for (name, b) in plan::recorded_backoff(&observed) {
            self.backoff.entry(name).or_insert(b);
        }
        let want = match &work.desired {
            Some(d) => d.want(now),
            // gone from the API: stopped with the grace period it had
            None => Want::Stop {
                grace_seconds: self
                    .last
                    .as_ref()
                    .map(DesiredPod::grace_seconds)
                    .unwrap_or_else(|| grace_label(&found)),
            },
        };
        let running = matches!(want, Want::Run(_));
        let known = work.desired.as_ref().or(self.last.as_ref());
        let started = known
            .map(|d| self.started_sidecars(d, &observed))
            .unwrap_or_default();
        let plan = podactions::plan_pod(
            want,
            known.map(|d| &d.spec),
            &observed,
            &self.backoff,
            &started,
            now,
        );
        // Remember how each dead container ended before the plan removes it.
        for o in &observed {
            if let State::Exited { code, at_ms } = o.state {
                let message = self
                    .termination_message(work.desired.as_ref(), &found, o, code)
                    .await;
                let earlier = self
                    .last_termination
                    .get(&o.name)
                    .filter(|t| t.started_ms < o.created_ms)
                    .cloned();
                if let Some(t) = earlier {
                    self.previous_termination.insert(o.name.clone(), t);
                }
                self.last_termination.insert(
                    o.name.clone(),
                    Termination {
                        exit_code: code as i32,
                        started_ms: o.created_ms,
                        finished_ms: at_ms,
                        message,
                    },
                );
            }
        }
        if !plan.actions.is_empty() {
            tracing::debug!(actions = ?plan.actions, observed = ?observed, "pod plan");
        }
        if let (true, Some(d), Some(sandbox)) = (running, &work.desired, &self.sandbox) {
            refresh_volumes(&self.ctx, d, sandbox).await;
        }
        if !running {
            // the pod is going: its probes stop, its containers stop together (preStop hooks
            // first, within the grace period), its sidecars after them
            self.probes.clear();
            if let Some(d) = self.last.as_ref() {
                for o in observed
                    .iter()
                    .filter(|o| matches!(o.state, State::Running))
                {
                    let msg = format!("Stopping container {}", o.name);
                    self.ctx.events.normal(&about(d, &o.name), "Killing", msg);
                }
            }
            let began = tokio::time::Instant::now();
            for (i, wave) in [&plan.actions, &plan.then].into_iter().enumerate() {
                // the sidecars get what the app containers left of the grace period (at least
                // the kubelet's minimum)
                let spent = if i == 0 {
                    0
                } else {
                    began.elapsed().as_secs() as i64
                };
                let stops = wave.iter().filter_map(|a| match a {
                    Action::Remove { id, grace_seconds } => {
                        let grace = match *grace_seconds {
                            0 => 0,
                            g if spent == 0 => g,
                            g => podactions::grace_after_pre_stop(g, spent),
                        };
                        let hook = known.and_then(|d| self.hook_target_of(d, &observed, id));
                        Some(remove_with_hook(&self.ctx, id, grace, hook))
                    }
                    _ => None,
                });
                futures::future::join_all(stops).await;
            }
        }
        for action in &plan.actions {
            changed = true;
            match action {
                Action::Remove { id, grace_seconds } if running => {
                    remove(&self.ctx, id, *grace_seconds).await;
                }
                Action::Remove { .. } => {}
                Action::RemoveSandbox => {
                    let uid = self.uid(&found);
                    if let Some(uid) = uid {
                        let removal = self.ctx.runtime.remove_sandbox(&uid);
                        if let Err(e) = bounded("remove sandbox", &uid, CALL_TIMEOUT, removal).await
                        {
                            tracing::warn!(error = %crate::runtime::chain(&e), "remove sandbox failed; retrying");
                            return false;
                        }
                    }
                    tracing::info!("pod removed");
                    return true;
                }
                Action::Start {
                    name,
                    restart_count,
                } => {
                    if let Some(d) = &work.desired {
                        self.start(d, name, *restart_count, now).await;
                    }
                }
            }
        }
        if changed {
            self.acted_at = Some(tokio::time::Instant::now());
        }
        for (name, until) in &plan.waiting {
            let crashed = observed
                .iter()
                .any(|o| &o.name == name && matches!(o.state, State::Exited { .. }));
            let secs = (until - now + 999) / 1000;
            let w = self.waiting.entry(name.clone()).or_insert(Waiting {
                reason: String::new(),
                message: String::new(),
            });
            if let Some(d) = self.last.as_ref() {
                let image = d.spec.containers.iter().find(|c| &c.name == name);
                let image = image.and_then(|c| c.image.as_deref()).unwrap_or("");
                let pulling = matches!(w.reason.as_str(), "ErrImagePull" | "ImagePullBackOff");
                if crashed || pulling {
                    events::back_off(&self.ctx.events, &about(d, name), image, crashed);
                }
            }
            if crashed {
                w.reason = "CrashLoopBackOff".into();
                w.message = format!("back-off {secs}s restarting failed container={name}");
            } else if w.reason == "ErrImagePull" || w.reason == "ImagePullBackOff" {
                w.reason = "ImagePullBackOff".into();
            } else if w.reason.is_empty() {
                w.reason = "ContainerCreating".into();
            }
        }
        let Some(desired) = work.desired.or_else(|| self.last.clone()) else {
            return observed.is_empty() && plan.actions.is_empty();
        };
        if running {
            self.adopt_sandbox(&desired, &observed).await;
            self.sync_probes(&desired, &observed);
            changed |= self.kill_failed(&desired).await;
        }
        let requeue = plan.requeue_at();
        self.send_status(&desired, &observed, requeue, changed, reports);
        self.last_report = Some((desired, observed, requeue));
        false
    }

    /// Stops and removes the containers (and sandboxes) of an earlier pod of this name.
    async fn remove_stale(&mut self, stale: &[ContainerStatus]) {
        let grace = grace_label(stale);
        let stops = stale.iter().map(|c| {
            let running = matches!(c.state, TaskState::Running { .. });
            remove(&self.ctx, &c.id, if running { grace } else { 0 })
        });
        futures::future::join_all(stops).await;
        let uids: std::collections::BTreeSet<&String> = stale
            .iter()
            .filter_map(|c| c.labels.get(labels::POD_UID))
            .chain(self.last.as_ref().map(|l| &l.uid))
            .collect();
        for uid in uids {
            let removal = self.ctx.runtime.remove_sandbox(uid);
            if let Err(e) = bounded("remove sandbox", uid, CALL_TIMEOUT, removal).await {
                tracing::warn!(error = %crate::runtime::chain(&e), "remove the earlier pod's sandbox failed");
            }
        }
    }

    /// Starts over for a new pod: nothing of the earlier one's state is kept.
    fn forget(&mut self, now: i64) {
        self.backoff.clear();
        self.waiting.clear();
        self.last_termination.clear();
        self.previous_termination.clear();
        self.images.clear();
        self.sandbox = None;
        self.status = None;
        self.probes.clear();
        self.last_report = None;
        self.started_seen.clear();
        self.start_ms = now;
        self.acted_at = Some(tokio::time::Instant::now());
    }

    /// Computes the pod's status and sends it to the controller.
    fn send_status(
        &mut self,
        desired: &DesiredPod,
        observed: &[Observed],
        requeue_at: Option<i64>,
        changed: bool,
        reports: &mpsc::UnboundedSender<Report>,
    ) {
        let now = self.ctx.clock.now_ms();
        let newest = plan::newest(observed);
        // a container with probes but no probe state for this incarnation (its pod is going,
        // or it was just seen) is neither started nor ready on a startup or readiness probe
        let gates = desired
            .spec
            .containers
            .iter()
            .chain(desired.spec.init_containers.iter().flatten())
            .filter_map(|c| {
                let o = newest.get(&c.name)?;
                let g = match self.probes.get(&c.name).filter(|r| r.id == o.id) {
                    Some(run) => lock(&run.state).gates(),
                    None => probe::initial_gates(c),
                };
                Some((c.name.clone(), g))
            })
            .collect();
        let view = PodView {
            spec: &desired.spec,
            containers: newest,
            images: self.images.clone(),
            waiting: self.waiting.clone(),
            last_termination: self.last_termination.clone(),
            previous_termination: self.previous_termination.clone(),
            host_ip: self.ctx.host_ip.clone(),
            pod_ips: self
                .sandbox
                .as_ref()
                .map(|s| s.ips.clone())
                .unwrap_or_default(),
            start_ms: self.start_ms,
            gates,
        };
        let mut st = status::pod_status(&view, self.status.as_ref(), now);
        // probes that cannot run say so on the Ready condition
        let unsupported: Vec<String> = desired
            .spec
            .containers
            .iter()
            .flat_map(|c| {
                [&c.startup_probe, &c.liveness_probe, &c.readiness_probe]
                    .into_iter()
                    .flatten()
                    .filter_map(|p| probe::handler(p, c).err())
                    .map(|e| format!("{}: {e}", c.name))
            })
            .collect();
        if !unsupported.is_empty() {
            for cond in st.conditions.iter_mut().flatten() {
                if cond.type_ == "Ready" || cond.type_ == "ContainersReady" {
                    let m = cond.message.get_or_insert_with(String::new);
                    if !m.is_empty() {
                        m.push_str("; ");
                    }
                    m.push_str(&unsupported.join("; "));
                }
            }
        }
        self.status = Some(st.clone());
        let _ = reports.send(Report::Status {
            key: self.key.clone(),
            pod: Box::new(desired.clone()),
            status: Box::new(st),
            requeue_at,
            changed,
            round: self.round,
        });
    }

    /// The sandbox of a pod whose containers run but that this worker did not start (the agent
    /// restarted): asked of the runtime, for its network namespace.
    async fn adopt_sandbox(&mut self, desired: &DesiredPod, observed: &[Observed]) {
        if self.sandbox.is_some() || !observed.iter().any(|o| o.state == State::Running) {
            return;
        }
        let pod = pod_sandbox(desired);
        let lookup = self.ctx.runtime.sandbox(&pod);
        match bounded("look up sandbox", &desired.uid, CALL_TIMEOUT, lookup).await {
            Ok(found) => self.sandbox = found,
            Err(e) => {
                tracing::warn!(error = %crate::runtime::chain(&e), "sandbox lookup failed; probes wait")
            }
        }
    }

    /// Starts the probes of containers newly seen running; stops those of containers gone.
    fn sync_probes(&mut self, desired: &DesiredPod, observed: &[Observed]) {
        let newest = plan::newest(observed);
        self.probes.retain(|name, run| {
            newest
                .get(name)
                .is_some_and(|o| o.id == run.id && o.state == State::Running)
        });
        let host_network = desired.spec.host_network.unwrap_or(false);
        // app containers and sidecars have probes (validation refuses them on other init
        // containers)
        let sidecars = desired.spec.init_containers.iter().flatten();
        for c in desired
            .spec
            .containers
            .iter()
            .chain(sidecars.filter(|c| podactions::is_sidecar(c)))
        {
            let Some(o) = newest.get(&c.name) else {
                continue;
            };
            if o.state != State::Running || self.probes.contains_key(&c.name) {
                continue;
            }
            let Some(cp) = ContainerProbes::of(c, o.created_ms) else {
                continue;
            };
            // the pod's network namespace, as the runtime gave it; until it is known (a pod
            // adopted after a restart whose lookup failed) its network probes wait
            let netns = match (host_network, &self.sandbox) {
                (true, _) => None,
                (
                    false,
                    Some(SandboxInfo {
                        netns: Some(ns), ..
                    }),
                ) => Some(ns.clone()),
                (false, _) => continue,
            };
            let target = Target {
                container_id: o.id.clone(),
                netns,
            };
            let state = Arc::new(std::sync::Mutex::new(cp));
            let wake = Arc::new(tokio::sync::Notify::new());
            let mut tasks = Vec::new();
            for (kind, p) in [
                (Kind::Startup, &c.startup_probe),
                (Kind::Liveness, &c.liveness_probe),
                (Kind::Readiness, &c.readiness_probe),
            ] {
                let Some(p) = p else { continue };
                let timing = probe::Timing::of(p);
                let period = Duration::from_millis(timing.period_ms.max(0) as u64);
                let jitter = match self.ctx.started {
                    Some(s) if s.elapsed() < period => period.mul_f64(rand::random::<f64>()),
                    _ => Duration::ZERO,
                };
                let task = ProbeTask {
                    jitter,
                    clock: self.ctx.clock.clone(),
                    kind,
                    handler: probe::handler(p, c),
                    timing,
                    target: target.clone(),
                    state: state.clone(),
                    prober: self.ctx.prober.clone(),
                    changed: self.probe_tx.clone(),
                    wake: wake.clone(),
                    events: self.ctx.events.clone(),
                    about: about(desired, &c.name),
                };
                // under the pod's span (the current one: this runs in a sync)
                let span = tracing::info_span!(
                    "probe",
                    container = c.name.as_str(),
                    container_id = o.id.as_str(),
                    probe = kind.as_str()
                );
                tasks.push(tokio::spawn(task.run().instrument(span)));
            }
            tracing::debug!(container_id = o.id.as_str(), "probes started");
            self.probes.insert(
                c.name.clone(),
                ProbeRun {
                    id: o.id.clone(),
                    state,
                    tasks,
                    killed: false,
                },
            );
        }
    }

    /// A probe result changed: kill containers that failed liveness or startup (the next round
    /// restarts them, counted and backed off as any exit), and report the new status.
    async fn on_probe(&mut self, reports: &mpsc::UnboundedSender<Report>) {
        let Some((desired, observed, requeue)) = self.last_report.clone() else {
            return;
        };
        let killed = self.kill_failed(&desired).await;
        // a sidecar whose startup probe passed lets the next init container start: a round
        let started = self.started_sidecars(&desired, &observed);
        let newly_started = started != self.started_seen;
        self.started_seen = started;
        self.send_status(
            &desired,
            &observed,
            requeue,
            killed || newly_started,
            reports,
        );
    }

    /// Stops the containers whose liveness or startup probe failed; true when it stopped any.
    /// A stop that fails is tried again on the next sync.
    async fn kill_failed(&mut self, desired: &DesiredPod) -> bool {
        let mut kills = Vec::new();
        for (name, run) in self.probes.iter_mut().filter(|(_, r)| !r.killed) {
            if let Some(k) = lock(&run.state).kill() {
                run.killed = true;
                kills.push((name.clone(), run.id.clone(), k));
            }
        }
        for (name, id, k) in &kills {
            let Some(c) = podactions::container(&desired.spec, name) else {
                continue;
            };
            let grace =
                probe::kill_grace_seconds(c, k.kind, desired.spec.termination_grace_period_seconds);
            let grace = match self.hook_target(desired, c, id) {
                Some(t) => hooks::pre_stop(self.ctx.prober.as_ref(), &t, grace).await,
                None => grace,
            };
            tracing::info!(
                container = name.as_str(),
                container_id = id.as_str(),
                grace_secs = grace,
                "{}",
                k.message
            );
            self.ctx
                .events
                .normal(&about(desired, name), "Killing", k.message.clone());
            let g = Duration::from_secs(grace as u64);
            let stop = self.ctx.runtime.stop_container(id, g);
            if let Err(e) = bounded("stop", id, g + CALL_TIMEOUT, stop).await {
                tracing::warn!(container_id = id.as_str(), error = %crate::runtime::chain(&e), "stop after a failed probe failed; trying again");
                if let Some(run) = self.probes.get_mut(name) {
                    run.killed = false;
                }
            }
        }
        if !kills.is_empty() {
            self.acted_at = Some(tokio::time::Instant::now());
        }
        !kills.is_empty()
    }

    /// What a dead container left as its termination message, read once per incarnation
    /// (FallbackToLogsOnError: its log's end when it failed and left none).
    async fn termination_message(
        &self,
        desired: Option<&DesiredPod>,
        found: &[ContainerStatus],
        o: &Observed,
        code: u32,
    ) -> Option<String> {
        if let Some(t) = self
            .last_termination
            .get(&o.name)
            .filter(|t| t.started_ms == o.created_ms)
        {
            return t.message.clone();
        }
        let pod = desired.or(self.last.as_ref())?;
        let policy = podactions::container(&pod.spec, &o.name)
            .and_then(|c| c.termination_message_policy.as_deref());
        let log = match (policy, self.uid(found)) {
            (Some("FallbackToLogsOnError"), Some(uid)) if code != 0 => {
                Some(crate::logdriver::log_path(
                    &self.ctx.state_dir,
                    &self.key,
                    &uid,
                    &o.name,
                    o.restart_count,
                ))
            }
            _ => None,
        };
        self.ctx
            .runtime
            .termination_message(&o.id, log.as_deref())
            .await
    }

    /// The uid of the pod's sandbox: the pod's on this node, else its containers' label.
    fn uid(&self, found: &[ContainerStatus]) -> Option<String> {
        self.last.as_ref().map(|d| d.uid.clone()).or_else(|| {
            found
                .iter()
                .find_map(|c| c.labels.get(labels::POD_UID).cloned())
        })
    }

    async fn start(&mut self, d: &DesiredPod, name: &str, restart_count: u32, now: i64) {
        let Some(container) = podactions::container(&d.spec, name) else {
            return;
        };
        let start = self.try_start(d, container, restart_count);
        let result = match bounded("start", name, START_TIMEOUT, start).await {
            // the postStart hook runs before the container counts as started
            Ok(id) => match self.post_start(d, container, &id).await {
                Ok(()) => Ok(id),
                Err(message) => {
                    let about = about(d, name);
                    let msg = format!("PostStartHook failed: {message}");
                    self.ctx.events.warning(&about, "FailedPostStartHook", msg);
                    Err(("PostStartHookError", message))
                }
            },
            // what failed and why, causes included (the registry's answer, containerd's
            // status), as the kubelet's messages read
            Err(e) => {
                events::start_failed(&self.ctx.events, &about(d, name), &e);
                Err((e.reason(), crate::runtime::chain(&e)))
            }
        };
        if restart_count > 0 || result.is_err() {
            let b = plan::after_restart(self.backoff.get(name), now);
            self.backoff.insert(name.to_string(), b);
        }
        match result {
            Ok(id) => {
                self.waiting.remove(name);
                let (rec, about) = (&self.ctx.events, about(d, name));
                rec.normal(&about, "Created", format!("Created container {name}"));
                rec.normal(&about, "Started", format!("Started container {name}"));
                tracing::info!(
                    container_id = id.as_str(),
                    restart_count,
                    "container started"
                );
            }
            Err((reason, message)) => {
                tracing::warn!(
                    container = name,
                    reason,
                    error = message.as_str(),
                    "container failed to start; backing off"
                );
                self.waiting.insert(
                    name.to_string(),
                    Waiting {
                        reason: reason.into(),
                        message,
                    },
                );
            }
        }
    }

    /// Runs the postStart hook of a container just started; a failure kills the container
    /// (after its preStop hook, within the pod's grace period, as the kubelet's killContainer
    /// with reason FailedPostStartHook), which the next round restarts with back-off.
    async fn post_start(
        &self,
        d: &DesiredPod,
        c: &k8s_openapi::api::core::v1::Container,
        id: &str,
    ) -> Result<(), String> {
        let Some(t) = self.hook_target(d, c, id) else {
            return Ok(());
        };
        let Err(message) = hooks::post_start(self.ctx.prober.as_ref(), &t).await else {
            return Ok(());
        };
        tracing::warn!(
            container_id = id,
            reason = "FailedPostStartHook",
            message = message.as_str(),
            "postStart hook failed; killing the container"
        );
        let grace = hooks::pre_stop(self.ctx.prober.as_ref(), &t, d.grace_seconds()).await;
        let g = Duration::from_secs(grace.max(0) as u64);
        let stop = self.ctx.runtime.stop_container(id, g);
        if let Err(e) = bounded("stop", id, g + CALL_TIMEOUT, stop).await {
            tracing::warn!(container_id = id, error = %crate::runtime::chain(&e), "stop after a failed postStart hook failed");
        }
        Err(message)
    }

    /// Where the hooks of container `c` (incarnation `id`) run, when it has any.
    fn hook_target(
        &self,
        d: &DesiredPod,
        c: &k8s_openapi::api::core::v1::Container,
        id: &str,
    ) -> Option<HookTarget> {
        let l = c.lifecycle.as_ref()?;
        if l.post_start.is_none() && l.pre_stop.is_none() {
            return None;
        }
        let host_network = d.spec.host_network.unwrap_or(false);
        let sandbox = self.sandbox.as_ref();
        Some(HookTarget {
            pod: d.key.clone(),
            container: c.clone(),
            target: Target {
                container_id: id.to_string(),
                netns: sandbox
                    .and_then(|s| s.netns.clone())
                    .filter(|_| !host_network),
            },
            pod_ip: if host_network {
                self.ctx.host_ip.clone()
            } else {
                sandbox.and_then(|s| s.ips.first().cloned())
            },
        })
    }

    /// The hook target of the observed container `id` of pod `d`.
    fn hook_target_of(
        &self,
        d: &DesiredPod,
        observed: &[Observed],
        id: &str,
    ) -> Option<HookTarget> {
        let o = observed
            .iter()
            .find(|o| o.id == id && o.state == State::Running)?;
        let c = podactions::container(&d.spec, &o.name)?;
        self.hook_target(d, c, id)
    }

    /// The sidecars of `d` whose running incarnation is started (its startup probe passed).
    fn started_sidecars(
        &self,
        d: &DesiredPod,
        observed: &[Observed],
    ) -> std::collections::BTreeSet<String> {
        let newest = plan::newest(observed);
        d.spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| podactions::is_sidecar(c))
            .filter(|c| {
                let Some(o) = newest.get(&c.name).filter(|o| o.state == State::Running) else {
                    return false;
                };
                match self.probes.get(&c.name).filter(|r| r.id == o.id) {
                    Some(run) => lock(&run.state).gates().started,
                    None => probe::initial_gates(c).started,
                }
            })
            .map(|c| c.name.clone())
            .collect()
    }

    async fn try_start(
        &mut self,
        d: &DesiredPod,
        container: &k8s_openapi::api::core::v1::Container,
        restart_count: u32,
    ) -> Result<String, RuntimeError> {
        let rt = &self.ctx.runtime;
        let image = container.image.clone().unwrap_or_default();
        // the runtime serializes pulls (as the kubelet does by default) after a lock-free check;
        // what it resolved is handed to run_container, which does not resolve it again
        let about = about(d, &container.name);
        let id = container_id(&d.key, &container.name, restart_count);
        let objects = pod_objects(&self.ctx, d, &id).await?;
        let pull_secrets: Vec<String> = (d.spec.image_pull_secrets.iter().flatten())
            .map(|s| s.name.clone())
            .collect();
        let (auth, problems) = crate::runtime::configvol::pull_credentials(&pull_secrets, &objects);
        for p in problems {
            tracing::warn!(reason = "FailedToRetrieveImagePullSecret", "{p}");
        }
        let policy = PullPolicy::of(container);
        let pulled =
            events::ensure_image(&self.ctx.events, &**rt, &about, &image, policy, &auth).await?;
        self.images
            .insert(container.name.clone(), (image, pulled.info.digest.clone()));
        let host_network = d.spec.host_network.unwrap_or(false);
        let sandbox = match &self.sandbox {
            Some(s) => s.clone(),
            None => {
                let s = rt.create_sandbox(&pod_sandbox(d)).await?;
                self.sandbox = Some(s.clone());
                s
            }
        };
        if let Ok((_, warnings)) =
            crate::runtime::configvol::resolve_env(container, &d.key.namespace, &objects)
        {
            for w in warnings {
                tracing::warn!(
                    container = container.name.as_str(),
                    reason = "InvalidEnvironmentVariableNames",
                    "{w}"
                );
            }
        }
        let mut container_labels = pod_labels(d);
        container_labels.insert(labels::CONTAINER_NAME.into(), container.name.clone());
        container_labels.insert(labels::RESTART_COUNT.into(), restart_count.to_string());
        let log_path = crate::logdriver::log_path(
            &self.ctx.state_dir,
            &d.key,
            &d.uid,
            &container.name,
            restart_count,
        );
        let req = ContainerRequest {
            id: id.clone(),
            labels: container_labels,
            pod_spec: d.spec.clone(),
            container: container.clone(),
            image: pulled,
            sandbox,
            hostname: if host_network {
                nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().to_string())
                    .unwrap_or_default()
            } else {
                d.key.name.clone()
            },
            log_path,
            pod: PodMeta {
                name: d.key.name.clone(),
                namespace: d.key.namespace.clone(),
                uid: d.api_uid.clone(),
                labels: d.labels.clone(),
                annotations: d.annotations.clone(),
                host_ips: self.ctx.host_ip.clone().into_iter().collect(),
                objects,
            },
        };
        rt.run_container(&req).await?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_valid_containerd_ids() {
        let key = PodKey {
            namespace: "default".into(),
            name: "node-monitor-bcdfg".into(),
        };
        assert_eq!(
            container_id(&key, "agent", 3),
            "default_node-monitor-bcdfg_agent_3"
        );
        let long = PodKey {
            namespace: "a-very-long-namespace-name".into(),
            name: "x".repeat(63),
        };
        let id = container_id(&long, "container", 12);
        assert!(id.len() <= 76, "{id}");
        assert!(id.ends_with("_12"));
        assert_ne!(id, container_id(&long, "other", 12));
    }
}

/// A recording, in-memory runtime for fast tests of the workers and the loop. The proof that
/// the real adapter works is in tests/ against real containerd.
#[cfg(test)]
pub mod fake {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct FakeRuntime {
        pub containers: Mutex<BTreeMap<String, ContainerStatus>>,
        pub calls: Mutex<Vec<String>>,
        /// Images whose pull fails.
        pub missing: Vec<String>,
        /// Stamps creation and exit times (None: the epoch, as a runtime that does not say).
        pub clock: Option<Clock>,
        /// Each container run, with the clock's unix ms then.
        pub runs: Mutex<Vec<(String, i64)>>,
        /// The exit subscription, once the controller took it.
        pub exits: Mutex<Option<mpsc::Sender<String>>>,
    }

    impl FakeRuntime {
        fn now_s(&self) -> i64 {
            self.clock.as_ref().map_or(0, |c| c.now_ms() / 1000)
        }

        /// The container's task exits with `code`, and the exit is published as containerd does.
        pub async fn exit(&self, id: &str, code: u32) {
            if let Some(c) = self.containers.lock().unwrap().get_mut(id) {
                c.state = TaskState::Stopped {
                    exit_code: code,
                    exited_at: Some(self.now_s()),
                };
            }
            let tx = self.exits.lock().unwrap().clone();
            if let Some(tx) = tx {
                let _ = tx.send(id.to_string()).await;
            }
        }

        /// The ids of the containers run so far, in order.
        pub fn run_ids(&self) -> Vec<String> {
            self.runs
                .lock()
                .unwrap()
                .iter()
                .map(|(id, _)| id.clone())
                .collect()
        }
    }

    impl FakeRuntime {
        fn sandbox_of(pod: &PodSandbox) -> SandboxInfo {
            SandboxInfo {
                netns: (!pod.host_network).then(|| PathBuf::from("/fake/netns").join(&pod.uid)),
                pod_dir: PathBuf::from("/fake/pods").join(&pod.uid),
                ..Default::default()
            }
        }
    }

    #[async_trait::async_trait]
    impl Runtime for FakeRuntime {
        async fn ensure_image(
            &self,
            reference: &str,
        ) -> crate::runtime::Result<crate::runtime::PulledImage> {
            self.calls.lock().unwrap().push(format!("pull {reference}"));
            if self.missing.iter().any(|m| m == reference) {
                return Err(RuntimeError::ImagePull {
                    image: reference.into(),
                    source: crate::runtime::pull::PullError::Registry {
                        op: "resolve",
                        what: reference.into(),
                        source:
                            oci_client::errors::OciDistributionError::ImageManifestNotFoundError(
                                reference.into(),
                            ),
                    },
                });
            }
            Ok(crate::runtime::PulledImage {
                info: crate::runtime::ImageInfo {
                    reference: reference.into(),
                    digest: "sha256:0".into(),
                },
                config: serde_json::Value::Null,
                chain_id: "sha256:1".into(),
            })
        }
        async fn create_sandbox(&self, pod: &PodSandbox) -> crate::runtime::Result<SandboxInfo> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("sandbox {}", pod.name));
            Ok(Self::sandbox_of(pod))
        }
        async fn sandbox(&self, pod: &PodSandbox) -> crate::runtime::Result<Option<SandboxInfo>> {
            Ok(Some(Self::sandbox_of(pod)))
        }
        async fn remove_sandbox(&self, uid: &str) -> crate::runtime::Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("remove-sandbox {uid}"));
            Ok(())
        }
        async fn run_container(&self, req: &ContainerRequest) -> crate::runtime::Result<()> {
            self.calls.lock().unwrap().push(format!("run {}", req.id));
            let now_ms = self.clock.as_ref().map_or(0, Clock::now_ms);
            self.runs.lock().unwrap().push((req.id.clone(), now_ms));
            self.containers.lock().unwrap().insert(
                req.id.clone(),
                ContainerStatus {
                    id: req.id.clone(),
                    image: req.container.image.clone().unwrap_or_default(),
                    labels: req.labels.clone(),
                    state: TaskState::Running { pid: 1 },
                    created_at: self.now_s(),
                },
            );
            Ok(())
        }
        async fn stop_container(&self, id: &str, _grace: Duration) -> crate::runtime::Result<()> {
            self.calls.lock().unwrap().push(format!("stop {id}"));
            if let Some(c) = self.containers.lock().unwrap().get_mut(id) {
                c.state = TaskState::Stopped {
                    exit_code: 143,
                    exited_at: Some(self.now_s()),
                };
            }
            Ok(())
        }
        async fn remove_container(&self, id: &str) -> crate::runtime::Result<()> {
            self.calls.lock().unwrap().push(format!("remove {id}"));
            self.containers.lock().unwrap().remove(id);
            Ok(())
        }
        async fn list_containers(&self) -> crate::runtime::Result<Vec<ContainerStatus>> {
            Ok(self.containers.lock().unwrap().values().cloned().collect())
        }
        async fn subscribe_exits(&self) -> crate::runtime::Result<mpsc::Receiver<String>> {
            let (tx, rx) = mpsc::channel(16);
            *self.exits.lock().unwrap() = Some(tx);
            Ok(rx)
        }
    }
}

#[cfg(test)]
mod worker_tests {
    use super::fake::FakeRuntime;
    use super::*;
    use k8s_openapi::api::core::v1::Container;

    fn desired(name: &str, image: &str) -> DesiredPod {
        let main = Container {
            name: "main".into(),
            image: Some(image.into()),
            ..Default::default()
        };
        plan::test_pod(name, main)
    }

    async fn next_status(rx: &mut mpsc::UnboundedReceiver<Report>) -> PodStatus {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Some(Report::Status { status, .. })) => return *status,
                Ok(Some(Report::Gone { .. })) => continue,
                other => panic!("no status report: {other:?}"),
            }
        }
    }

    /// A fake runtime that cannot pull `image`, and a worker context over it.
    fn without_image(image: &str) -> (Arc<FakeRuntime>, Arc<Context>) {
        let rt = Arc::new(FakeRuntime {
            missing: vec![image.into()],
            ..Default::default()
        });
        let ctx = Arc::new(Context {
            prober: Arc::new(crate::agent::prober::fake::FakeProber::default()),
            runtime: rt.clone(),
            state_dir: PathBuf::from("/nonexistent"),
            host_ip: None,
            node: "node-a".into(),
            started: None,
            clock: Clock::system(),
            events: Recorder::disabled(),
            objects: Arc::new(crate::agent::configsource::Unavailable),
        });
        (rt, ctx)
    }

    /// The worker's events no longer name their pod: the sync's span does, and the journald
    /// layer writes its fields on each event (a datagram socket stands in for journald).
    #[tokio::test]
    async fn worker_events_carry_the_pod_span_fields() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journald = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let layer = crate::logging::JournaldLayer::connect(&path, &[]).unwrap();
        // this thread's subscriber: a current-thread runtime runs the worker here too
        let _subscriber =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        let (_, ctx) = without_image("nope:1");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let pod = desired("bad", "nope:1");
        let w = spawn(pod.key.clone(), ctx, tx);
        w.send(Work {
            desired: Some(pod),
            ..Default::default()
        })
        .unwrap();
        next_status(&mut rx).await;
        journald.set_nonblocking(true).unwrap();
        let mut buf = vec![0; 65536];
        let mut seen = Vec::new();
        while let Ok(n) = journald.recv(&mut buf) {
            seen.push(crate::logdriver::journal::decode(&buf[..n]).unwrap());
        }
        let failed = seen
            .iter()
            .find(|f| {
                f.contains(&(
                    "MESSAGE".into(),
                    b"container failed to start; backing off".to_vec(),
                ))
            })
            .unwrap_or_else(|| panic!("no failed start among {} entries", seen.len()));
        for (name, want) in [
            ("POD", "default/bad"),
            ("DAEMONSET", "ds"),
            ("NODE", "node-a"),
            ("CONTAINER", "main"),
        ] {
            let got: Vec<_> = failed
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice())
                .collect();
            assert_eq!(got, [want.as_bytes()], "{name}");
        }
    }

    #[tokio::test]
    async fn failing_pull_backs_off_alone_and_pod_removal_cleans_up() {
        let (rt, ctx) = without_image("nope:1");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let bad = spawn(desired("bad", "nope:1").key, ctx.clone(), tx.clone());
        let good = spawn(desired("good", "busybox:v1").key, ctx.clone(), tx.clone());
        let fresh = |name: &str, image: &str| Work {
            desired: Some(desired(name, image)),
            observed: vec![],
            listed_at: None,
            round: 0,
        };
        let reason = |st: PodStatus| {
            st.container_statuses.unwrap()[0]
                .state
                .clone()
                .unwrap()
                .waiting
                .unwrap()
                .reason
        };
        bad.send(fresh("bad", "nope:1")).unwrap();
        let st = next_status(&mut rx).await;
        assert_eq!(reason(st).as_deref(), Some("ErrImagePull"));
        good.send(fresh("good", "busybox:v1")).unwrap();
        next_status(&mut rx).await;
        assert_eq!(rt.containers.lock().unwrap().len(), 1, "the good pod runs");
        // the bad pod, asked again at once, waits for its back-off instead of pulling again
        bad.send(fresh("bad", "nope:1")).unwrap();
        let st = next_status(&mut rx).await;
        assert_eq!(reason(st).as_deref(), Some("ImagePullBackOff"));
        let pulls = rt
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == "pull nope:1")
            .count();
        assert_eq!(pulls, 1);
        // the good pod goes away: stop, remove, sandbox removed, worker reports Gone
        let observed = rt.containers.lock().unwrap().values().cloned().collect();
        good.send(Work {
            desired: None,
            observed,
            listed_at: None,
            round: 0,
        })
        .unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
            {
                Some(Report::Gone { key, .. }) => {
                    assert_eq!(key.name, "good");
                    break;
                }
                Some(_) => continue,
                None => panic!("channel closed"),
            }
        }
        assert!(rt.containers.lock().unwrap().is_empty());
        let calls = rt.calls.lock().unwrap().clone();
        assert!(
            calls.contains(&"remove-sandbox uid-good".to_string()),
            "{calls:?}"
        );
    }
}

/// One pod's worker on tokio's paused time, with the fake runtime and prober: probes, back-off
/// and requeue deadlines as the worker decides them, without real sleeps.
#[cfg(test)]
mod pod_tests {
    use super::fake::FakeRuntime;
    use super::*;
    use crate::agent::prober::fake::FakeProber;
    use k8s_openapi::api::core::v1::{Container, ExecAction, Probe};

    /// The wall clock when a test starts (whole seconds, as containerd's times are).
    const BASE_MS: i64 = 1_700_000_000_000;

    fn exec(cmd: &str, failure_threshold: i32) -> Option<Probe> {
        Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec![cmd.into()]),
            }),
            period_seconds: Some(1),
            failure_threshold: Some(failure_threshold),
            ..Default::default()
        })
    }

    fn desired(container: Container) -> DesiredPod {
        let mut pod = plan::test_pod("p", container);
        pod.spec.termination_grace_period_seconds = Some(3);
        pod
    }

    struct Harness {
        rt: Arc<FakeRuntime>,
        prober: Arc<FakeProber>,
        tx: watch::Sender<Work>,
        rx: mpsc::UnboundedReceiver<Report>,
        pod: DesiredPod,
    }

    impl Harness {
        fn new(container: Container) -> Harness {
            let clock = Clock::starting_at(BASE_MS);
            let rt = Arc::new(FakeRuntime {
                clock: Some(clock.clone()),
                ..Default::default()
            });
            let prober = Arc::new(FakeProber::default());
            let ctx = Arc::new(Context {
                runtime: rt.clone(),
                prober: prober.clone(),
                state_dir: PathBuf::from("/nonexistent"),
                host_ip: None,
                node: "node-a".into(),
                started: None,
                clock,
                events: Recorder::disabled(),
                objects: Arc::new(crate::agent::configsource::Unavailable),
            });
            let pod = desired(container);
            let (rtx, rx) = mpsc::unbounded_channel();
            let tx = spawn(pod.key.clone(), ctx, rtx);
            Harness {
                rt,
                prober,
                tx,
                rx,
                pod,
            }
        }

        /// One controller round: the worker gets what the fake runtime has now.
        fn round(&self) {
            let observed = self
                .rt
                .containers
                .lock()
                .unwrap()
                .values()
                .cloned()
                .collect();
            self.tx
                .send(Work {
                    desired: Some(self.pod.clone()),
                    observed,
                    listed_at: None,
                    round: 0,
                })
                .unwrap();
        }

        /// The next status report satisfying `f` (with whether it asked for a round).
        async fn until(&mut self, what: &str, f: impl Fn(&PodStatus) -> bool) -> (PodStatus, bool) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(Report::Status {
                        status, changed, ..
                    })) => {
                        if f(&status) {
                            return (*status, changed);
                        }
                    }
                    Ok(Some(Report::Gone { .. })) => {}
                    other => panic!("no status where {what}: {other:?}"),
                }
            }
        }
    }

    fn main_status(s: &PodStatus) -> k8s_openapi::api::core::v1::ContainerStatus {
        s.container_statuses.as_ref().unwrap()[0].clone()
    }

    fn running(s: &PodStatus) -> bool {
        main_status(s).state.unwrap().running.is_some()
    }

    fn waiting_message(s: &PodStatus) -> Option<String> {
        let w = main_status(s).state?.waiting?;
        Some(format!("{}: {}", w.reason?, w.message?))
    }

    /// A dead incarnation of container `main` as an earlier agent left it in containerd.
    fn dead(pod: &DesiredPod, restarts: u32, created_s: i64, exited_s: i64) -> ContainerStatus {
        let labels = [
            (labels::MANAGED_BY, labels::MANAGED_BY_VALUE.to_string()),
            (labels::POD_NAMESPACE, pod.key.namespace.clone()),
            (labels::POD_NAME, pod.key.name.clone()),
            (labels::POD_UID, pod.uid.clone()),
            (labels::CONTAINER_NAME, "main".into()),
            (labels::RESTART_COUNT, restarts.to_string()),
        ];
        ContainerStatus {
            id: container_id(&pod.key, "main", restarts),
            image: "busybox:v1".into(),
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            state: TaskState::Stopped {
                exit_code: 1,
                exited_at: Some(exited_s),
            },
            created_at: created_s,
        }
    }

    /// What a restarted agent finds in containerd: the third incarnation (restart count 2),
    /// started 5 s ago and dead for 4 s. The agent that started it had a 20 s back-off running
    /// from that start; the new worker rebuilds it from the record instead of restarting at once
    /// and starting over at 10 s.
    #[tokio::test(start_paused = true)]
    async fn crash_loop_back_off_survives_an_agent_restart() {
        let mut h = Harness::new(Container {
            name: "main".into(),
            image: Some("busybox:v1".into()),
            ..Default::default()
        });
        let base_s = BASE_MS / 1000;
        let c = dead(&h.pod, 2, base_s - 5, base_s - 4);
        h.rt.containers.lock().unwrap().insert(c.id.clone(), c);
        h.round();
        let (st, _) = h.until("a status", |_| true).await;
        // 20 s from the end of the second it started in: 16 s to go
        assert_eq!(
            waiting_message(&st).as_deref(),
            Some("CrashLoopBackOff: back-off 16s restarting failed container=main")
        );
        assert_eq!(main_status(&st).restart_count, 2, "the count is kept");
        // looked at again 1 ms before the deadline: still waiting
        tokio::time::advance(Duration::from_millis(15_998)).await;
        h.round();
        let (st, _) = h.until("a status", |_| true).await;
        assert_eq!(
            waiting_message(&st).as_deref(),
            Some("CrashLoopBackOff: back-off 1s restarting failed container=main")
        );
        assert!(h.rt.run_ids().is_empty(), "{:?}", h.rt.run_ids());
        // at the deadline: the fourth incarnation
        tokio::time::advance(Duration::from_millis(1)).await;
        h.round();
        h.until("restarted", |_| true).await;
        assert_eq!(
            h.rt.runs.lock().unwrap().clone(),
            vec![("default_p_main_3".to_string(), BASE_MS + 15_999)]
        );
        // it dies at once: the next delay doubles the rebuilt 20 s
        h.rt.exit("default_p_main_3", 1).await;
        h.round();
        let (st, _) = h
            .until("back-off again", |s| waiting_message(s).is_some())
            .await;
        assert_eq!(
            waiting_message(&st).as_deref(),
            Some("CrashLoopBackOff: back-off 40s restarting failed container=main")
        );
        assert_eq!(main_status(&st).restart_count, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_gates_ready_and_failed_liveness_restarts_the_container() {
        let mut h = Harness::new(Container {
            name: "main".into(),
            image: Some("busybox:v1".into()),
            readiness_probe: exec("ready", 3),
            liveness_probe: exec("live", 3),
            ..Default::default()
        });
        h.prober.set("ready", Outcome::Failure("exit 1".into()));
        h.round();
        h.until("started", |_| true).await;
        h.round();
        let (st, _) = h.until("running", running).await;
        let cs = main_status(&st);
        assert_eq!(
            (cs.ready, cs.started),
            (false, Some(true)),
            "not ready before a success"
        );
        h.prober.set("ready", Outcome::Success);
        let (st, changed) = h.until("ready", |s| main_status(s).ready).await;
        assert!(!changed, "a readiness change needs no round");
        let ready = st
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready");
        assert_eq!(ready.unwrap().status, "True");
        // readiness failures past the threshold: not ready, never killed
        h.prober.set("ready", Outcome::Failure("exit 1".into()));
        h.until("unready", |s| !main_status(s).ready).await;
        assert!(!h
            .rt
            .calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.starts_with("stop")));
        // liveness fails three times: the container is stopped and a round is asked for
        h.prober.set("live", Outcome::Failure("exit 1".into()));
        let rt = h.rt.clone();
        let (_, changed) = h
            .until("the kill", |_| {
                rt.calls
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|c| c.starts_with("stop"))
            })
            .await;
        assert!(changed);
        let lives_before = h.prober.count("live");
        assert!(lives_before >= 3);
        h.prober.set("live", Outcome::Success);
        // the next round sees it exited and restarts it with restartCount 1
        h.round();
        h.until("restarted", |_| true).await;
        let calls = h.rt.calls.lock().unwrap().clone();
        assert!(
            calls.contains(&"run default_p_main_1".to_string()),
            "{calls:?}"
        );
        h.round();
        let (st, _) = h
            .until("the new incarnation reported", |s| {
                main_status(s).restart_count == 1 && running(s)
            })
            .await;
        let cs = main_status(&st);
        assert!(cs.last_state.unwrap().terminated.is_some());
        assert!(!cs.ready, "a new incarnation starts unready");
        h.prober.set("ready", Outcome::Success);
        h.until("the new incarnation ready", |s| main_status(s).ready)
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_adopted_pod_is_probed_in_the_netns_the_runtime_gives() {
        let h = Harness::new(Container {
            name: "main".into(),
            image: Some("busybox:v1".into()),
            liveness_probe: exec("live", 3),
            ..Default::default()
        });
        // a container an earlier agent started: the worker never made its sandbox
        let id = container_id(&h.pod.key, "main", 0);
        let labels = [
            (labels::POD_NAMESPACE, "default"),
            (labels::POD_NAME, "p"),
            (labels::CONTAINER_NAME, "main"),
            (labels::RESTART_COUNT, "0"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        h.rt.containers.lock().unwrap().insert(
            id.clone(),
            ContainerStatus {
                id: id.clone(),
                image: "busybox:v1".into(),
                labels: labels.into_iter().collect(),
                state: TaskState::Running { pid: 1 },
                created_at: 0,
            },
        );
        h.round();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let target = loop {
            if let Some(t) = h.prober.targets.lock().unwrap().first().cloned() {
                break t;
            }
            assert!(tokio::time::Instant::now() < deadline, "never probed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(target.container_id, id);
        assert_eq!(target.netns, Some(PathBuf::from("/fake/netns/uid-p")));
        let calls = h.rt.calls.lock().unwrap().clone();
        assert!(
            !calls
                .iter()
                .any(|c| c.starts_with("run") || c.starts_with("sandbox")),
            "adopted, not started again: {calls:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn startup_probe_holds_liveness_and_readiness() {
        let mut h = Harness::new(Container {
            name: "main".into(),
            image: Some("busybox:v1".into()),
            startup_probe: exec("start", 30),
            liveness_probe: exec("live", 1),
            ..Default::default()
        });
        h.prober.set("start", Outcome::Failure("not yet".into()));
        h.prober.set("live", Outcome::Failure("dead".into()));
        h.round();
        h.until("started", |_| true).await;
        h.round();
        let (st, _) = h.until("running", running).await;
        assert_eq!(main_status(&st).started, Some(false));
        // the probes started with the container; 4.5 s on, the startup probe ran at 0, 1, 2, 3
        // and 4 s, liveness not once
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        assert_eq!(h.prober.count("start"), 5);
        assert_eq!(h.prober.count("live"), 0, "liveness waits for startup");
        assert!(!h
            .rt
            .calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.starts_with("stop")));
        h.prober.set("live", Outcome::Success);
        h.prober.set("start", Outcome::Success);
        let (st, _) = h
            .until("started", |s| main_status(s).started == Some(true))
            .await;
        assert!(
            main_status(&st).ready,
            "no readiness probe: ready once started"
        );
        let starts = h.prober.count("start");
        assert_eq!(starts, 6, "the startup probe succeeded on its tick at 5 s");
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        assert_eq!(
            h.prober.count("start"),
            starts,
            "startup stops once it succeeded"
        );
        // liveness ran at 6, 7 and 8 s, and on the tick at 5 s when that one came after the
        // startup success
        let lives = h.prober.count("live");
        assert!((3..=4).contains(&lives), "{lives} liveness probes");
    }

    fn exec_hook(cmd: &str) -> k8s_openapi::api::core::v1::LifecycleHandler {
        k8s_openapi::api::core::v1::LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec![cmd.into()]),
            }),
            ..Default::default()
        }
    }

    fn init_states(s: &PodStatus) -> Vec<String> {
        s.init_container_statuses
            .iter()
            .flatten()
            .map(|c| {
                let st = c.state.clone().unwrap();
                match (st.running, st.waiting, st.terminated) {
                    (Some(_), _, _) => format!("{} running started={:?}", c.name, c.started),
                    (_, Some(w), _) => format!("{} {}", c.name, w.reason.unwrap()),
                    (_, _, Some(t)) => format!("{} exited {}", c.name, t.exit_code),
                    _ => format!("{} ?", c.name),
                }
            })
            .collect()
    }

    /// A sidecar with a startup probe, then a regular init container, then the app: each
    /// started only once the one before it did its part; the sidecar's startup success alone
    /// (a probe result, no container event) asks for the round that starts the next one.
    #[tokio::test(start_paused = true)]
    async fn init_containers_start_in_order_behind_a_sidecar_startup_probe() {
        let mut h = Harness::new(Container {
            name: "main".into(),
            image: Some("busybox:v1".into()),
            ..Default::default()
        });
        h.pod.spec.init_containers = Some(vec![
            Container {
                name: "side".into(),
                image: Some("busybox:v1".into()),
                restart_policy: Some("Always".into()),
                startup_probe: exec("up", 100),
                ..Default::default()
            },
            Container {
                name: "setup".into(),
                image: Some("busybox:v1".into()),
                ..Default::default()
            },
        ]);
        h.prober.set("up", Outcome::Failure("not yet".into()));
        h.round();
        h.until("the sidecar started", |_| true).await;
        assert_eq!(h.rt.run_ids(), ["default_p_side_0"]);
        h.round();
        let (st, _) = h
            .until("the sidecar not started yet", |s| {
                init_states(s)
                    .first()
                    .is_some_and(|i| i.contains("running"))
            })
            .await;
        assert_eq!(
            init_states(&st),
            ["side running started=Some(false)", "setup PodInitializing"]
        );
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        h.round();
        h.until("a status", |_| true).await;
        assert_eq!(h.rt.run_ids(), ["default_p_side_0"], "setup waits");
        // the startup probe passes: a status that asks for a round
        h.prober.set("up", Outcome::Success);
        h.until("the sidecar started", |s| {
            init_states(s)
                .first()
                .is_some_and(|i| i.ends_with("started=Some(true)"))
        })
        .await;
        h.round();
        h.until("setup started", |_| true).await;
        assert_eq!(h.rt.run_ids(), ["default_p_side_0", "default_p_setup_0"]);
        h.rt.exit("default_p_setup_0", 0).await;
        h.round();
        h.until("the app started", |_| true).await;
        assert_eq!(
            h.rt.run_ids(),
            ["default_p_side_0", "default_p_setup_0", "default_p_main_0"]
        );
        h.round();
        let (st, _) = h.until("all there", running).await;
        assert_eq!(
            init_states(&st),
            ["side running started=Some(true)", "setup exited 0"]
        );
        assert_eq!(st.phase.as_deref(), Some("Running"));
        // the pod goes: the app stops first, the sidecar after it, the record just goes
        let calls_before = h.rt.calls.lock().unwrap().len();
        h.tx.send(Work {
            desired: None,
            observed: h.rt.containers.lock().unwrap().values().cloned().collect(),
            listed_at: None,
            round: 0,
        })
        .unwrap();
        loop {
            match h.rx.recv().await {
                Some(Report::Gone { .. }) => break,
                Some(_) => {}
                None => panic!("the worker ended without saying"),
            }
        }
        let calls = h.rt.calls.lock().unwrap()[calls_before..].to_vec();
        let pos = |c: &str| {
            calls
                .iter()
                .position(|x| x == c)
                .unwrap_or_else(|| panic!("{c}: {calls:?}"))
        };
        assert!(
            pos("stop default_p_main_0") < pos("stop default_p_side_0"),
            "{calls:?}"
        );
        assert!(
            !calls.contains(&"stop default_p_setup_0".to_string()),
            "{calls:?}"
        );
    }

    /// A failed postStart hook kills the container, says PostStartHookError, and the restart
    /// waits for the back-off; a preStop hook runs before the stop.
    #[tokio::test(start_paused = true)]
    async fn a_failed_post_start_hook_kills_the_container() {
        let mut h = Harness::new(Container {
            name: "main".into(),
            image: Some("busybox:v1".into()),
            lifecycle: Some(k8s_openapi::api::core::v1::Lifecycle {
                post_start: Some(exec_hook("hook")),
                pre_stop: Some(exec_hook("drain")),
                ..Default::default()
            }),
            ..Default::default()
        });
        h.prober.set(
            "hook",
            Outcome::Failure("command [\"hook\"] exited with 1".into()),
        );
        h.round();
        let (st, changed) = h.until("the hook failed", |_| true).await;
        assert!(changed);
        let message = waiting_message(&st).unwrap();
        assert!(
            message.starts_with(
                "PostStartHookError: Exec lifecycle hook ([\"hook\"]) for Container \"main\""
            ),
            "{message}"
        );
        let calls = h.rt.calls.lock().unwrap().clone();
        assert!(
            calls.ends_with(&[
                "run default_p_main_0".to_string(),
                "stop default_p_main_0".to_string()
            ]),
            "{calls:?}"
        );
        assert_eq!(h.prober.count("drain"), 1, "the kill runs the preStop hook");
        // the dead container waits for its back-off
        h.round();
        let (st, _) = h
            .until("backing off", |s| waiting_message(s).is_some())
            .await;
        assert!(
            waiting_message(&st)
                .unwrap()
                .starts_with("CrashLoopBackOff"),
            "{st:?}"
        );
        assert_eq!(h.rt.run_ids(), ["default_p_main_0"]);
    }
}
