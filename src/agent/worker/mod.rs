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
        let mut observed: Vec<Observed> = found.iter().filter_map(observed).collect();
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
                        Some(stop_with_hook(&self.ctx, id, grace, hook))
                    }
                    _ => None,
                });
                futures::future::join_all(stops).await;
            }
        }
        // the incarnations started in this sync, running: the status below says so at once
        let mut started_now = Vec::new();
        for action in &plan.actions {
            changed = true;
            match action {
                Action::Remove { id, grace_seconds } if running => {
                    remove(&self.ctx, id, *grace_seconds).await;
                }
                Action::Remove { .. } => {}
                Action::RemoveSandbox => {
                    // the stopped containers' records and snapshots go at the same time as the
                    // sandbox (its network torn down), not before it: the pod's final delete (in
                    // a rolling update, the node's turn for its next pod) waits for both (the
                    // kubelet's waits for the stops and the network only)
                    let stopped = plan.actions.iter().chain(&plan.then);
                    let removals = stopped.filter_map(|a| match a {
                        Action::Remove { id, .. } => Some(remove_stopped(&self.ctx, id)),
                        _ => None,
                    });
                    let uid = self.uid(&found);
                    let sandbox = async {
                        let Some(uid) = uid.as_deref() else {
                            return Ok(());
                        };
                        let removal = self.ctx.runtime.remove_sandbox(uid);
                        bounded("remove sandbox", uid, CALL_TIMEOUT, removal).await
                    };
                    let (_, removal) = tokio::join!(futures::future::join_all(removals), sandbox);
                    if let Err(e) = removal {
                        tracing::warn!(error = %crate::runtime::chain(&e), "remove sandbox failed; retrying");
                        return false;
                    }
                    tracing::info!("pod removed");
                    return true;
                }
                Action::Start {
                    name,
                    restart_count,
                } => {
                    if let Some(d) = &work.desired {
                        started_now.extend(self.start(d, name, *restart_count, now).await);
                    }
                }
            }
        }
        if changed {
            self.acted_at = Some(tokio::time::Instant::now());
        }
        observed.extend(started_now);
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
        // before its first status, the API's start time (an agent restart keeps it)
        if self.status.is_none() {
            if let Some(t) = desired.api_start_ms {
                self.start_ms = self.start_ms.min(t);
            }
        }
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
        // before its first status, the API's: condition transition times survive an agent restart
        let from_api = PodStatus {
            conditions: Some(desired.api_conditions.clone()),
            ..Default::default()
        };
        let prev = self.status.as_ref().unwrap_or(&from_api);
        let mut st = status::pod_status(&view, Some(prev), now);
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
}

mod containers;
#[cfg(test)]
pub mod fake;
mod ids;
mod probes;
#[cfg(test)]
mod tests;
mod volumes;

use containers::{remove, remove_stopped, stop_with_hook};
pub use ids::{container_id, observed, pod_key_of, uuid_shaped};
use ids::{grace_label, pod_labels, pod_sandbox};
use probes::{lock, ProbeRun};
use volumes::{pod_objects, refresh_volumes};
