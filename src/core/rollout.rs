//! The DaemonSet controller's decisions across the fleet, as Kubernetes' `pkg/controller/daemon`
//! makes them: which nodes get a new pod and which pods go (`manage`, its `podsShouldBeOnNode`),
//! and which old pods a rolling update deletes within its budget (`rollingUpdate` and
//! `updatedDesiredNodeCounts` of `update.go`). Pure: the caller passes the nodes' verdicts, the
//! pods the DaemonSet owns and the time, and carries out the creates and deletes.
//!
//! Nodes are visited in name order where Kubernetes walks a Go map, so a decision is the same
//! every time it is made from the same state.
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::apps::v1::DaemonSetUpdateStrategy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::core::validation::int_or_percent;

/// How many creates and deletes one sync issues at most (the controller's `burstReplicas`).
pub const BURST: usize = 250;
/// The back-off before a failed daemon pod on a node is deleted again: 1 s doubling to 15 min
/// (`failedPodsBackoff`).
pub const FAILED_BACKOFF_INITIAL_MS: i64 = 1_000;
pub const FAILED_BACKOFF_MAX_MS: i64 = 900_000;

/// A node, as `core::eligibility::node_should_run` judged it for the DaemonSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFit {
    pub name: String,
    pub should_run: bool,
    pub should_continue_running: bool,
    /// The Node's Ready condition is not False or Unknown (a node without conditions counts as
    /// ready). A not-ready node's terminating pod cannot finish until its agent is back, so it
    /// does not hold the rolling update's budget (the deletion is decided; it is no new risk).
    pub ready: bool,
}

/// A pod's `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl Phase {
    pub fn parse(s: &str) -> Phase {
        match s {
            "Running" => Phase::Running,
            "Succeeded" => Phase::Succeeded,
            "Failed" => Phase::Failed,
            "Unknown" => Phase::Unknown,
            _ => Phase::Pending,
        }
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// A pod the DaemonSet owns, as the decisions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonPod {
    pub name: String,
    /// `spec.nodeName`; empty for a pod bound to no node.
    pub node: String,
    /// Its `controller-revision-hash` label.
    pub hash: String,
    /// `metadata.creationTimestamp`, unix ms.
    pub created_ms: i64,
    pub phase: Phase,
    /// `metadata.deletionTimestamp` is set: the pod is going.
    pub deleting: bool,
    /// The Ready condition is True.
    pub ready: bool,
    /// That condition's `lastTransitionTime`, unix ms.
    pub ready_since_ms: Option<i64>,
    /// What its agent reported of pulling the DaemonSet's next revision
    /// (`daemonset-agent.io/NextRevisionReady`).
    pub next: Option<NextRevision>,
    /// Why it does not run as it should, when a container says so (a waiting reason that is a
    /// failure, or the phase Failed).
    pub problem: Option<Problem>,
    /// The revision its node was told to pre-pull ([`PULL_NEXT`]): `Some("")` waits for the
    /// word; None (a pod without the annotation) pre-pulls every next revision at once.
    pub pull_next: Option<String>,
}

/// The condition an agent reports on an old pod once it pulled (or failed to pull) the images of
/// the DaemonSet's current revision: the pre-pull gate of the rolling update.
pub const NEXT_REVISION_READY: &str = "daemonset-agent.io/NextRevisionReady";

/// The `NextRevisionReady` condition's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRevision {
    /// The revision (template hash) whose images were pulled, or not.
    pub hash: String,
    pub pulled: bool,
    /// The pull's error when it failed.
    pub error: String,
}

impl NextRevision {
    /// (status, reason, message) of the condition.
    pub fn condition(&self) -> (&'static str, &'static str, String) {
        if self.pulled {
            (
                "True",
                "Pulled",
                format!("revision {}: images pulled", self.hash),
            )
        } else {
            (
                "False",
                "ErrImagePull",
                format!("revision {}: {}", self.hash, self.error),
            )
        }
    }

    /// The condition read back from its status and message.
    pub fn parse(status: &str, message: &str) -> Option<NextRevision> {
        let rest = message.strip_prefix("revision ")?;
        let (hash, tail) = rest.split_once(": ")?;
        let pulled = status == "True";
        Some(NextRevision {
            hash: hash.to_string(),
            pulled,
            error: if pulled {
                String::new()
            } else {
                tail.to_string()
            },
        })
    }
}

/// The annotation by which the controller tells a node, on its old pod, which revision (template
/// hash) to pre-pull now. The controller creates its pods with it empty (wait for the word) and
/// names the revision on the pods of the next wave only, in the order the rollout takes the nodes:
/// pulled all at once, a fleet's pre-pulls share the registry (and, where nodes share a machine,
/// its containerd and CPU), and the first wave waits for the slowest of them. A pod without the
/// annotation (made by another controller, or by one before it) pre-pulls at once.
pub const PULL_NEXT: &str = "daemonset-agent.io/pull-next";

/// The annotation that opts a DaemonSet into the automatic rollback: when the new revision fails
/// on as many nodes as the budget allows at once, the controller puts the previous revision's
/// template back, as `kubectl rollout undo` does.
pub const ROLLBACK_ON_FAILURE: &str = "daemonset-agent.io/rollback-on-failure";

/// The annotation of a canary step (DaemonSets have no `partition`, StatefulSets do): with
/// `daemonset-agent.io/rollout-partition: "N"` a rolling update leaves N of the nodes on their old
/// revision and stops there, so `desired - 1` updates one node; lowering or removing it lets the
/// rollout go on. It holds back the voluntary replacements only: a node whose old pod is not
/// available, or that has no pod, gets the current template as always (and counts as updated).
pub const PARTITION: &str = "daemonset-agent.io/rollout-partition";

/// The partition an annotation value asks for; None when it is not a non-negative integer.
pub fn parse_partition(value: &str) -> Option<i64> {
    value.trim().parse().ok().filter(|n: &i64| *n >= 0)
}

/// A pod's failure as its status tells it, e.g. `ImagePullBackOff` with the registry's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: String,
    pub message: String,
}

/// Waiting reasons that mean a container cannot run (the kubelet's), as opposed to getting
/// there (`ContainerCreating`, `PodInitializing`).
pub fn is_failure_reason(reason: &str) -> bool {
    matches!(
        reason,
        "ErrImagePull"
            | "ImagePullBackOff"
            | "InvalidImageName"
            | "ErrImageNeverPull"
            | "CrashLoopBackOff"
            | "CreateContainerConfigError"
            | "CreateContainerError"
            | "RunContainerError"
            | "StartError"
    )
}

impl DaemonPod {
    /// `podutil.IsPodAvailable`: ready for at least `min_ready_seconds`.
    pub fn is_available(&self, min_ready_seconds: i64, now_ms: i64) -> bool {
        self.ready
            && (min_ready_seconds <= 0
                || self
                    .ready_since_ms
                    .is_some_and(|t| t + min_ready_seconds * 1000 < now_ms))
    }

    /// Its node pulled the images of revision `hash` (the pre-pull gate is open).
    pub fn pulled(&self, hash: &str) -> bool {
        self.next
            .as_ref()
            .is_some_and(|n| n.hash == hash && n.pulled)
    }

    /// Its node failed to pull the images of revision `hash`: the error.
    pub fn pull_failed(&self, hash: &str) -> Option<&str> {
        self.next
            .as_ref()
            .filter(|n| n.hash == hash && !n.pulled)
            .map(|n| n.error.as_str())
    }

    /// When a ready pod that is not available yet becomes available (unix ms).
    pub fn available_at(&self, min_ready_seconds: i64, now_ms: i64) -> Option<i64> {
        if !self.ready || min_ready_seconds <= 0 || self.is_available(min_ready_seconds, now_ms) {
            return None;
        }
        self.ready_since_ms
            .map(|t| t + min_ready_seconds * 1000 + 1)
    }

    /// Kubernetes' podByCreationTimestampAndPhase: bound pods first, then the oldest, then by name.
    fn order_key(&self) -> (bool, i64, &str) {
        (self.node.is_empty(), self.created_ms, &self.name)
    }
}

/// The pods that count on each node: all but those both terminal and being deleted
/// (getNodesToDaemonPods without `includeDeletedTerminal`), each node's oldest first.
pub fn pods_by_node(pods: &[DaemonPod]) -> BTreeMap<&str, Vec<&DaemonPod>> {
    let mut m: BTreeMap<&str, Vec<&DaemonPod>> = BTreeMap::new();
    for p in pods {
        if p.phase.is_terminal() && p.deleting {
            continue;
        }
        m.entry(p.node.as_str()).or_default().push(p);
    }
    for list in m.values_mut() {
        list.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    }
    m
}

/// Per node, the back-off of deleting its failed daemon pod (flowcontrol.Backoff as the
/// controller uses it). The caller keeps one per DaemonSet generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailedBackoff {
    /// node -> (last deletion, current delay), unix ms.
    entries: BTreeMap<String, (i64, i64)>,
}

impl FailedBackoff {
    /// When the back-off of `node` ends, if it runs at `now_ms` (IsInBackOffSinceUpdate).
    pub fn until(&self, node: &str, now_ms: i64) -> Option<i64> {
        let (last, delay) = self.entries.get(node)?;
        (now_ms - last < *delay).then_some(last + delay)
    }

    /// A failed pod on `node` was deleted at `now_ms`: the next waits twice as long (Next).
    pub fn next(&mut self, node: &str, now_ms: i64) {
        let e = self.entries.entry(node.to_string()).or_insert((now_ms, 0));
        let expired = now_ms - e.0 > 2 * FAILED_BACKOFF_MAX_MS;
        e.1 = if e.1 == 0 || expired {
            FAILED_BACKOFF_INITIAL_MS
        } else {
            (e.1 * 2).min(FAILED_BACKOFF_MAX_MS)
        };
        e.0 = now_ms;
    }
}

/// Why a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Its phase is Failed; it is replaced.
    Failed,
    /// Its phase is Succeeded; it is replaced.
    Succeeded,
    /// Another pod of the DaemonSet runs on the node, and is older.
    Excess,
    /// Its node may no longer run it (`should_continue_running` false).
    NodeIneligible,
    /// It is bound to no node (a pod adopted from elsewhere): the DaemonSet binds its own.
    Unbound,
    /// It runs an old revision and the rolling update's budget lets it go.
    Outdated,
}

/// A pod to delete, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub pod: String,
    pub why: Why,
}

/// What `manage` decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manage {
    /// The nodes that get a new pod.
    pub create_on: Vec<String>,
    pub delete: Vec<Delete>,
    /// The nodes whose failed pod is deleted now (their back-off advances).
    pub failed_on: Vec<String>,
    /// The earliest end of a failed pod's back-off: sync again then.
    pub retry_at: Option<i64>,
}

impl Manage {
    /// Nothing to create or delete: the rolling update may run (the expectations are met).
    pub fn is_empty(&self) -> bool {
        self.create_on.is_empty() && self.delete.is_empty()
    }
}

/// A RollingUpdate with maxSurge: the manage loop lets a node hold an old and a new pod while the
/// new one becomes available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Surge<'a> {
    /// The current revision.
    pub hash: &'a str,
    pub min_ready_seconds: i64,
}

/// `manage`: for each node, whether a pod is created, and which pods go (`podsShouldBeOnNode`).
/// A node with any counted pod, a terminating one included, gets no new pod: a pod going away
/// still occupies its node until it is gone. Without surge only the oldest running pod of a node
/// stays; with `surge`, the oldest new and the oldest old one, until the old one is not ready or
/// the new one is available.
pub fn manage(
    nodes: &[NodeFit],
    pods: &[DaemonPod],
    backoff: &FailedBackoff,
    now_ms: i64,
    surge: Option<Surge<'_>>,
) -> Manage {
    let by_node = pods_by_node(pods);
    let mut out = Manage::default();
    for node in nodes {
        let on_node = by_node.get(node.name.as_str());
        let exists = on_node.is_some_and(|l| !l.is_empty());
        if node.should_run && !exists {
            out.create_on.push(node.name.clone());
        } else if node.should_continue_running {
            let mut running = Vec::new();
            for p in on_node.into_iter().flatten() {
                if p.deleting {
                    continue;
                }
                match p.phase {
                    Phase::Failed => match backoff.until(&node.name, now_ms) {
                        Some(until) => {
                            out.retry_at = Some(out.retry_at.map_or(until, |r| r.min(until)));
                        }
                        None => {
                            out.failed_on.push(node.name.clone());
                            out.delete.push(delete(p, Why::Failed));
                        }
                    },
                    Phase::Succeeded => out.delete.push(delete(p, Why::Succeeded)),
                    _ => running.push(*p),
                }
            }
            match surge {
                // without surge, only the oldest running pod stays (the list is oldest first)
                None => {
                    for p in running.iter().skip(1) {
                        out.delete.push(delete(p, Why::Excess));
                    }
                }
                Some(s) => surge_pair(&running, s, now_ms, &mut out.delete),
            }
        } else if exists {
            for p in on_node.into_iter().flatten().filter(|p| !p.deleting) {
                out.delete.push(delete(p, Why::NodeIneligible));
            }
        }
    }
    // pods bound to no node never run: the DaemonSet binds its own (getUnscheduledPodsWithoutNode)
    for p in by_node.get("").into_iter().flatten() {
        if !p.deleting {
            out.delete.push(delete(p, Why::Unbound));
        }
    }
    out
}

/// With surge, of a node's running pods (oldest first) the oldest new and the oldest old one may
/// stay together; the old one goes once it is not ready or the new one is available.
fn surge_pair(running: &[&DaemonPod], s: Surge<'_>, now_ms: i64, out: &mut Vec<Delete>) {
    let (mut oldest_new, mut oldest_old) = (None, None);
    for p in running {
        let slot = if p.hash == s.hash {
            &mut oldest_new
        } else {
            &mut oldest_old
        };
        if slot.is_none() {
            *slot = Some(*p);
        } else {
            out.push(delete(p, Why::Excess));
        }
    }
    if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
        if !old.ready || new.is_available(s.min_ready_seconds, now_ms) {
            out.push(delete(old, Why::Outdated));
        }
    }
}

fn delete(p: &DaemonPod, why: Why) -> Delete {
    Delete {
        pod: p.name.clone(),
        why,
    }
}

/// Kubernetes' `GetScaledValueFromIntOrPercent`: an int as it is, a percent of `total` rounded
/// up (or down). None for a string that is not a percent (validation refuses those).
pub fn scaled(v: &IntOrString, total: i64, round_up: bool) -> Option<i64> {
    let n = int_or_percent(v)?;
    Some(match v {
        IntOrString::Int(_) => n,
        IntOrString::String(_) if round_up => (n * total + 99) / 100,
        IntOrString::String(_) => n * total / 100,
    })
}

/// The rolling update's budget (`updatedDesiredNodeCounts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The nodes that should run the pod.
    pub desired: i64,
    pub max_unavailable: i64,
    pub max_surge: i64,
}

/// maxUnavailable and maxSurge of a RollingUpdate `strategy` over `desired` nodes, percents
/// rounded up; both zero (which validation refuses) means maxUnavailable 1, as Kubernetes does.
pub fn budget(strategy: Option<&DaemonSetUpdateStrategy>, desired: i64) -> Budget {
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let value = |v: Option<&IntOrString>, default: i32| {
        let v = v.cloned().unwrap_or(IntOrString::Int(default));
        scaled(&v, desired, true).unwrap_or(0).max(0)
    };
    let max_surge = value(ru.and_then(|r| r.max_surge.as_ref()), 0);
    let mut max_unavailable = value(ru.and_then(|r| r.max_unavailable.as_ref()), 1);
    if desired > 0 && max_unavailable == 0 && max_surge == 0 {
        max_unavailable = 1;
    }
    Budget {
        desired,
        max_unavailable,
        max_surge,
    }
}

/// The new and the old pod of a node, not counting those being deleted; None when there are
/// several of either (the manage loop prunes them first) (`findUpdatedPodsOnNode`).
fn new_and_old<'a>(
    pods: &[&'a DaemonPod],
    hash: &str,
) -> Option<(Option<&'a DaemonPod>, Option<&'a DaemonPod>)> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().filter(|p| !p.deleting) {
        let slot = if p.hash == hash { &mut new } else { &mut old };
        if slot.is_some() {
            return None;
        }
        *slot = Some(*p);
    }
    Some((new, old))
}

/// What a rolling update's sync decided (`rollingUpdate`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// Old pods that go now.
    pub delete: Vec<Delete>,
    /// With surge: the nodes that get a new pod beside their old one.
    pub create_on: Vec<String>,
    /// Without surge: the nodes whose available old pod waits for its node to pull the new
    /// revision's images (the pre-pull gate), in name order.
    pub waiting_pull: Vec<String>,
    /// The old pods whose node is told now to pre-pull the current revision ([`PULL_NEXT`]).
    pub pull_next: Vec<String>,
}

/// The strategy is `OnDelete`: a pod runs its revision until someone deletes it.
pub fn is_on_delete(strategy: Option<&DaemonSetUpdateStrategy>) -> bool {
    strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete")
}

/// `rollingUpdate`: which old pods go and, with maxSurge, which nodes get their new pod beside
/// the old one, so that no more than maxUnavailable of the nodes that should run the pod are
/// without an available one (or no more than maxSurge nodes run two). `OnDelete` decides
/// nothing: the manage loop replaces a pod once it is deleted.
///
/// Without surge, old pods that are not available go first and always (counted against the
/// budget); available old pods then go while the budget lasts, each only once its node has
/// pulled the new revision (`NextRevisionReady`): an image that cannot be pulled stops nothing.
/// A node whose pod is being deleted, or that has none yet, counts as unavailable, except a node
/// that is not ready and holds only a terminating pod (counted when it was deleted; it cannot
/// finish until the node is back, and must not hold the fleet); so does a new pod that is not
/// available yet.
pub fn rolling_update(
    strategy: Option<&DaemonSetUpdateStrategy>,
    min_ready_seconds: i64,
    nodes: &[NodeFit],
    pods: &[DaemonPod],
    hash: &str,
    now_ms: i64,
) -> Update {
    partitioned_update(strategy, min_ready_seconds, nodes, pods, hash, now_ms, 0)
}

/// [`rolling_update`] that leaves `partition` nodes on their old revision ([`PARTITION`]): no
/// more than `desired - partition` nodes are updated or on their way.
pub fn partitioned_update(
    strategy: Option<&DaemonSetUpdateStrategy>,
    min_ready_seconds: i64,
    nodes: &[NodeFit],
    pods: &[DaemonPod],
    hash: &str,
    now_ms: i64,
    partition: i64,
) -> Update {
    let mut by_node = pods_by_node(pods);
    by_node.remove("");
    if is_on_delete(strategy) {
        // a pod runs its revision until someone deletes it: every node may pull the next now
        let pull_next = by_node
            .values()
            .flatten()
            .filter(|p| !p.deleting && p.hash != hash)
            .filter(|p| p.pull_next.as_deref().is_some_and(|h| h != hash))
            .map(|p| p.name.clone())
            .collect();
        return Update {
            pull_next,
            ..Update::default()
        };
    }
    let desired = nodes.iter().filter(|n| n.should_run).count() as i64;
    for n in nodes.iter().filter(|n| n.should_run) {
        by_node.entry(n.name.as_str()).or_default();
    }
    let fits: BTreeMap<&str, &NodeFit> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let b = budget(strategy, desired);
    let available = |p: &DaemonPod| p.is_available(min_ready_seconds, now_ms);
    // the nodes updated or on their way (a new pod, a pod going, or none yet)
    let touched = by_node
        .iter()
        .filter(|(node, _)| fits.get(*node).is_some_and(|f| f.should_run))
        .filter(|(_, pods)| pods.is_empty() || pods.iter().any(|p| p.hash == hash || p.deleting))
        .count() as i64;
    let may_touch = desired - partition.max(0) - touched;
    let surge = b.max_surge > 0;
    let v = View {
        by_node: &by_node,
        fits: &fits,
        hash,
        available: &available,
    };
    let mut out = if surge {
        surge_update(b.max_surge, may_touch, &v)
    } else {
        unavailable_update(b.max_unavailable, may_touch, &v)
    };
    // the next wave's nodes pre-pull while this one is replaced; with surge the new pods that
    // are not ready yet pull for themselves and take a slot each
    let (decided, in_flight) = if surge {
        let starting = by_node
            .values()
            .filter_map(|pods| new_and_old(pods, hash))
            .filter(|(new, old)| old.is_some() && new.is_some_and(|n| !n.ready))
            .count();
        (out.create_on.len(), out.create_on.len() + starting)
    } else {
        (out.delete.len(), 0)
    };
    let slots = b.max_unavailable.max(b.max_surge) - in_flight as i64;
    let left = may_touch - decided as i64;
    out.pull_next = pull_next(&v, &out, slots.min(left));
    out
}

/// The fleet as a rolling update's sync sees it: each node's counted pods (oldest first), the
/// nodes, the current revision and availability at the sync's time.
struct View<'a> {
    by_node: &'a BTreeMap<&'a str, Vec<&'a DaemonPod>>,
    fits: &'a BTreeMap<&'a str, &'a NodeFit>,
    hash: &'a str,
    available: &'a dyn Fn(&DaemonPod) -> bool,
}

/// [`partitioned_update`] without surge: old pods that are not available go at once, available
/// ones (pulled) while fewer than `max_unavailable` nodes are without an available pod, and no
/// more than `may_touch` nodes.
fn unavailable_update(max_unavailable: i64, mut may_touch: i64, v: &View<'_>) -> Update {
    let mut out = Update::default();
    let mut unavailable = 0;
    let mut candidates = Vec::new();
    for (node, pods) in v.by_node {
        let Some((new, old)) = new_and_old(pods, v.hash) else {
            unavailable += 1;
            continue;
        };
        match (new, old) {
            (None, None) => {
                let node_down = v.fits.get(node).is_some_and(|f| !f.ready);
                if pods.is_empty() || !node_down {
                    unavailable += 1;
                }
            }
            (Some(_), Some(_)) => unavailable += 1,
            (Some(new), None) => {
                if !(v.available)(new) {
                    unavailable += 1;
                }
            }
            (None, Some(old)) => {
                if !(v.available)(old) {
                    out.delete.push(delete(old, Why::Outdated));
                    unavailable += 1;
                    may_touch -= 1;
                } else if !old.pulled(v.hash) {
                    out.waiting_pull.push(node.to_string());
                } else if unavailable < max_unavailable {
                    candidates.push(delete(old, Why::Outdated));
                }
            }
        }
    }
    let room = (max_unavailable - unavailable)
        .min(may_touch)
        .clamp(0, candidates.len() as i64) as usize;
    out.delete.extend(candidates.into_iter().take(room));
    out
}

/// The old pods whose node is told now to pre-pull revision `hash` ([`PULL_NEXT`]): the next
/// nodes the rollout takes (name order) that run only an available old pod which `decided` does
/// not replace already, so that at most `slots` of them are told and not yet replaced. A node
/// whose pull failed frees its slot (the next node tries; the stall is reported as before), and
/// a pod without the annotation pulls by itself.
fn pull_next(v: &View<'_>, decided: &Update, slots: i64) -> Vec<String> {
    let waiting: Vec<&DaemonPod> = v
        .by_node
        .iter()
        .filter(|(node, _)| v.fits.get(*node).is_some_and(|f| f.should_run))
        .filter(|(node, _)| !decided.create_on.iter().any(|n| n == *node))
        .filter_map(|(_, pods)| match new_and_old(pods, v.hash) {
            Some((None, Some(old))) => Some(old),
            _ => None,
        })
        .filter(|old| old.pull_next.is_some() && (v.available)(old))
        .filter(|old| !decided.delete.iter().any(|d| d.pod == old.name))
        .filter(|old| old.pull_failed(v.hash).is_none())
        .collect();
    let told = waiting
        .iter()
        .filter(|p| p.pull_next.as_deref() == Some(v.hash))
        .count() as i64;
    let room = (slots - told).max(0) as usize;
    waiting
        .iter()
        .filter(|p| p.pull_next.as_deref() != Some(v.hash))
        .take(room)
        .map(|p| p.name.clone())
        .collect()
}

/// `rollingUpdate` with maxSurge: a node whose old pod is not available gets its new pod at
/// once; up to maxSurge others get theirs beside the old one, which goes once the new one is
/// available. A node with more pods than an old and a new one is left to the manage loop and
/// counts as surging.
fn surge_update(max_surge: i64, mut may_touch: i64, v: &View<'_>) -> Update {
    let mut out = Update::default();
    let mut surging = 0;
    let mut candidates = Vec::new();
    for (node, pods) in v.by_node {
        let should_run = v.fits.get(node).is_some_and(|f| f.should_run);
        let Some((new, old)) = new_and_old(pods, v.hash) else {
            surging += 1;
            continue;
        };
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) if !(v.available)(old) => {
                if should_run {
                    out.create_on.push(node.to_string());
                    may_touch -= 1;
                } else {
                    out.delete.push(delete(old, Why::Outdated));
                }
            }
            (None, Some(_)) => {
                if should_run && surging < max_surge {
                    candidates.push(node.to_string());
                }
            }
            (Some(new), Some(old)) => {
                if (v.available)(new) {
                    out.delete.push(delete(old, Why::Outdated));
                } else {
                    surging += 1;
                }
            }
        }
    }
    let room = (max_surge - surging)
        .min(may_touch)
        .clamp(0, candidates.len() as i64) as usize;
    out.create_on.extend(candidates.into_iter().take(room));
    out
}

/// Why the rollout of revision `hash` does not progress: the first node (in name order) whose
/// new pod fails, or that could not pull the new revision, and how many nodes fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub node: String,
    pub reason: String,
    pub message: String,
    /// The nodes failing the new revision.
    pub failing: i64,
}

impl Stall {
    /// `ImagePullBackOff on node n3: manifest unknown`.
    pub fn describe(&self) -> String {
        format!("{} on node {}: {}", self.reason, self.node, self.message)
    }
}

/// The rollout's stall, if any node fails the new revision (`hash`).
pub fn stall(pods: &[DaemonPod], hash: &str) -> Option<Stall> {
    let mut failing: BTreeMap<&str, (String, String)> = BTreeMap::new();
    for p in pods.iter().filter(|p| !p.deleting && !p.node.is_empty()) {
        let why = if p.hash == hash {
            p.problem
                .as_ref()
                .map(|pr| (pr.reason.clone(), pr.message.clone()))
        } else {
            p.pull_failed(hash)
                .map(|e| ("ErrImagePull".to_string(), e.to_string()))
        };
        if let Some(why) = why {
            failing.entry(p.node.as_str()).or_insert(why);
        }
    }
    let count = failing.len() as i64;
    let (node, (reason, message)) = failing.into_iter().next()?;
    Some(Stall {
        node: node.to_string(),
        reason,
        message,
        failing: count,
    })
}

/// The opt-in automatic rollback (`daemonset-agent.io/rollback-on-failure: "true"`) is due: the
/// new revision fails on as many nodes as the budget lets go at once (at least one).
pub fn rollback_due(stall: &Stall, b: Budget) -> bool {
    stall.failing >= b.max_unavailable.max(b.max_surge).max(1)
}

/// When the controller saw each pod turn Ready, by pod uid (unix ms of the controller's clock).
///
/// `lastTransitionTime` is a `metav1.Time`: written with whole seconds, so the Ready condition
/// says only that the pod turned ready somewhere in the second it names. Taken as exact (as
/// Kubernetes' `IsPodAvailable` does), a pod counts as available up to a second before it was
/// ready for minReadySeconds, and a rollout's waves snap to whole seconds: a wave that turned
/// ready at x.1 s and one at x.9 s both end at x+minReady+0.001. The controller saw the
/// transition (the status write's watch event) no earlier than it happened, so that sighting is
/// a time the pod was certainly not ready for less: availability becomes exact to the watch's
/// latency and never early. A pod whose transition was not seen (it turned ready before the
/// controller started) keeps the stored time, as Kubernetes has it.
#[derive(Debug, Default)]
pub struct ReadySeen {
    at: HashMap<String, i64>,
}

impl ReadySeen {
    /// A watch event of pod `uid`: `ready` now, `was_ready` before it (None: no previous
    /// object, as for a pod just created), seen at `now_ms`; `gone`: the pod was deleted.
    pub fn observe(
        &mut self,
        uid: &str,
        was_ready: Option<bool>,
        ready: bool,
        gone: bool,
        now_ms: i64,
    ) {
        if gone || !ready {
            self.at.remove(uid);
        } else if was_ready == Some(false) || (was_ready.is_none() && !self.at.contains_key(uid)) {
            self.at.insert(uid.to_string(), now_ms);
        }
    }

    /// Since when pod `uid` is ready, from its condition's `stored` time: the later of the two.
    pub fn since(&self, uid: &str, stored: Option<i64>) -> Option<i64> {
        match (stored, self.at.get(uid)) {
            (Some(t), Some(&seen)) => Some(t.max(seen)),
            (t, _) => t,
        }
    }

    /// Forgets the pods not in `live` (deletions a lagging watch did not deliver).
    pub fn retain(&mut self, live: &dyn Fn(&str) -> bool) {
        self.at.retain(|uid, _| live(uid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::RollingUpdateDaemonSet;

    const NOW: i64 = 1_800_000_000_000;

    fn nodes(n: usize) -> Vec<NodeFit> {
        (0..n)
            .map(|i| NodeFit {
                name: format!("node-{i}"),
                should_run: true,
                should_continue_running: true,
                ready: true,
            })
            .collect()
    }

    /// A ready pod `name` of revision `hash` on `node`, an hour old.
    fn pod(name: &str, node: &str, hash: &str) -> DaemonPod {
        DaemonPod {
            name: name.into(),
            node: node.into(),
            hash: hash.into(),
            created_ms: NOW - 3_600_000,
            phase: Phase::Running,
            deleting: false,
            ready: true,
            ready_since_ms: Some(NOW - 3_600_000),
            next: None,
            problem: None,
            pull_next: Some(String::new()),
        }
    }

    /// Its node pulled revision `hash` (the agent's report that opens the pre-pull gate).
    fn pulled(mut p: DaemonPod, hash: &str) -> DaemonPod {
        p.next = Some(NextRevision {
            hash: hash.into(),
            pulled: true,
            error: String::new(),
        });
        p
    }

    fn names(d: &[Delete]) -> Vec<&str> {
        d.iter().map(|d| d.pod.as_str()).collect()
    }

    fn unavailable(v: IntOrString) -> DaemonSetUpdateStrategy {
        DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_unavailable: Some(v),
                max_surge: None,
            }),
        }
    }

    fn surge(v: IntOrString) -> DaemonSetUpdateStrategy {
        DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_unavailable: Some(IntOrString::Int(0)),
                max_surge: Some(v),
            }),
        }
    }

    /// update_test.go's TestGetUnavailableNumbers, as far as it is arithmetic.
    #[test]
    fn budget_table() {
        let pct = |s: &str| IntOrString::String(s.into());
        type Case = (
            &'static str,
            Option<DaemonSetUpdateStrategy>,
            i64,
            (i64, i64),
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("no nodes", Some(unavailable(IntOrString::Int(0))), 0, (0, 0)),
            ("two nodes, maxUnavailable 1", Some(unavailable(IntOrString::Int(1))), 2, (1, 0)),
            ("both zero on two nodes: 1", Some(unavailable(IntOrString::Int(0))), 2, (1, 0)),
            ("surge 0 on two nodes: unavailable 1", Some(surge(IntOrString::Int(0))), 2, (1, 0)),
            ("50% of 2", Some(unavailable(pct("50%"))), 2, (1, 0)),
            ("50% surge of 2", Some(surge(pct("50%"))), 2, (0, 1)),
            ("100% surge of 2", Some(surge(pct("100%"))), 2, (0, 2)),
            ("50% of 3 rounds up", Some(unavailable(pct("50%"))), 3, (2, 0)),
            ("25% of 20", Some(unavailable(pct("25%"))), 20, (5, 0)),
            ("1% of 5 rounds up", Some(unavailable(pct("1%"))), 5, (1, 0)),
            ("defaulted: maxUnavailable 1", None, 4, (1, 0)),
        ];
        for (what, strategy, desired, (unavail, surge)) in cases {
            let b = budget(strategy.as_ref(), desired);
            assert_eq!((b.max_unavailable, b.max_surge), (unavail, surge), "{what}");
        }
        assert_eq!(scaled(&pct("ten"), 10, true), None);
        assert_eq!(scaled(&pct("50%"), 3, false), Some(1));
    }

    #[test]
    fn manage_table() {
        let fit = |name: &str, run: bool, cont: bool| NodeFit {
            name: name.into(),
            should_run: run,
            should_continue_running: cont,
            ready: true,
        };
        let with = |mut p: DaemonPod, f: &dyn Fn(&mut DaemonPod)| {
            f(&mut p);
            p
        };
        let older = |p: &mut DaemonPod| p.created_ms -= 1_000;
        let deleting = |p: &mut DaemonPod| p.deleting = true;
        let failed = |p: &mut DaemonPod| p.phase = Phase::Failed;
        type Case = (
            &'static str,
            Vec<NodeFit>,
            Vec<DaemonPod>,
            Vec<&'static str>,
            Vec<(&'static str, Why)>,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("a node without a pod gets one", vec![fit("n1", true, true)], vec![], vec!["n1"], vec![]),
            ("a node with its pod: nothing", vec![fit("n1", true, true)], vec![pod("a", "n1", "h")], vec![], vec![]),
            ("a node that may not run it gets none", vec![fit("n1", false, false)], vec![], vec![], vec![]),
            ("tainted NoSchedule: the pod may stay", vec![fit("n1", false, true)], vec![pod("a", "n1", "h")], vec![], vec![]),
            ("tainted NoExecute: the pod goes", vec![fit("n1", false, false)], vec![pod("a", "n1", "h")], vec![], vec![("a", Why::NodeIneligible)]),
            ("a terminating pod occupies its node", vec![fit("n1", true, true)], vec![with(pod("a", "n1", "h"), &deleting)], vec![], vec![]),
            ("a terminating pod is not deleted again", vec![fit("n1", false, false)], vec![with(pod("a", "n1", "h"), &deleting)], vec![], vec![]),
            ("two pods: the oldest stays", vec![fit("n1", true, true)], vec![pod("b", "n1", "h"), with(pod("a", "n1", "h"), &older)], vec![], vec![("b", Why::Excess)]),
            ("same age: by name", vec![fit("n1", true, true)], vec![pod("b", "n1", "h"), pod("a", "n1", "h")], vec![], vec![("b", Why::Excess)]),
            ("a failed pod goes", vec![fit("n1", true, true)], vec![with(pod("a", "n1", "h"), &failed)], vec![], vec![("a", Why::Failed)]),
            ("a failed pod being deleted no longer counts: a new one", vec![fit("n1", true, true)],
                vec![with(with(pod("a", "n1", "h"), &failed), &deleting)], vec!["n1"], vec![]),
            ("an unbound pod goes", vec![fit("n1", true, true)], vec![pod("a", "n1", "h"), pod("u", "", "h")], vec![], vec![("u", Why::Unbound)]),
            ("a pod on a node that is gone is left to the pod GC", vec![fit("n1", true, true)], vec![pod("a", "n1", "h"), pod("g", "gone", "h")], vec![], vec![]),
        ];
        for (what, nodes, pods, create, deletes) in cases {
            let m = manage(&nodes, &pods, &FailedBackoff::default(), NOW, None);
            assert_eq!(m.create_on, create, "{what}");
            let got: Vec<(&str, Why)> = m.delete.iter().map(|d| (d.pod.as_str(), d.why)).collect();
            assert_eq!(got, deletes, "{what}");
        }
    }

    #[test]
    fn failed_pods_are_deleted_with_back_off() {
        let nodes = vec![NodeFit {
            name: "n1".into(),
            should_run: true,
            should_continue_running: true,
            ready: true,
        }];
        let mut failed = pod("a", "n1", "h");
        failed.phase = Phase::Failed;
        let mut b = FailedBackoff::default();
        let m = manage(&nodes, std::slice::from_ref(&failed), &b, NOW, None);
        assert_eq!(
            (names(&m.delete), m.failed_on.clone()),
            (vec!["a"], vec!["n1".into()])
        );
        b.next("n1", NOW);
        // the replacement failed too, half a second later: it waits out the 1 s back-off
        let m = manage(&nodes, std::slice::from_ref(&failed), &b, NOW + 500, None);
        assert!(m.is_empty(), "{m:?}");
        assert_eq!(m.retry_at, Some(NOW + 1_000));
        let m = manage(&nodes, std::slice::from_ref(&failed), &b, NOW + 1_000, None);
        assert_eq!(names(&m.delete), ["a"]);
        b.next("n1", NOW + 1_000);
        assert_eq!(b.until("n1", NOW + 1_001), Some(NOW + 3_000), "doubled");
        for i in 0..20 {
            b.next("n1", NOW + 2_000 + i);
        }
        assert_eq!(
            b.until("n1", NOW + 2_020),
            Some(NOW + 2_019 + FAILED_BACKOFF_MAX_MS)
        );
        // long quiet: back to 1 s
        let later = NOW + 2_019 + 2 * FAILED_BACKOFF_MAX_MS + 1;
        b.next("n1", later);
        assert_eq!(
            b.until("n1", later),
            Some(later + FAILED_BACKOFF_INITIAL_MS)
        );
    }

    /// The fleet as update_test.go drives it: sync (deletes within the budget), the manage loop
    /// recreates the deleted pods with the new revision (not ready), and they become ready.
    struct Fleet {
        nodes: Vec<NodeFit>,
        pods: Vec<DaemonPod>,
        next: usize,
    }

    impl Fleet {
        fn new(n: usize, hash: &str) -> Fleet {
            let nodes = nodes(n);
            let pods = nodes
                .iter()
                .enumerate()
                .map(|(i, nd)| pod(&format!("old-{i}"), &nd.name, hash))
                .collect();
            Fleet {
                nodes,
                pods,
                next: 0,
            }
        }
        /// One rolling update sync; the deleted pods go at once. Returns how many were deleted.
        fn roll(&mut self, strategy: &DaemonSetUpdateStrategy, hash: &str) -> usize {
            for p in &mut self.pods {
                *p = pulled(p.clone(), hash);
            }
            let d = rolling_update(Some(strategy), 0, &self.nodes, &self.pods, hash, NOW).delete;
            self.pods.retain(|p| !d.iter().any(|d| d.pod == p.name));
            d.len()
        }
        /// One manage sync; returns how many pods it created (not ready).
        fn recreate(&mut self, hash: &str) -> usize {
            let m = manage(
                &self.nodes,
                &self.pods,
                &FailedBackoff::default(),
                NOW,
                None,
            );
            for n in &m.create_on {
                self.next += 1;
                let mut p = pod(&format!("new-{}", self.next), n, hash);
                p.ready = false;
                p.ready_since_ms = None;
                self.pods.push(p);
            }
            m.create_on.len()
        }
        fn mark_ready(&mut self) {
            for p in &mut self.pods {
                p.ready = true;
                p.ready_since_ms = Some(NOW - 1);
            }
        }
        fn ready_old(&self) -> usize {
            self.pods
                .iter()
                .filter(|p| p.hash == "h1" && p.ready)
                .count()
        }
    }

    /// TestDaemonSetUpdatesPods: 5 nodes, maxUnavailable 2: 2, 2, then 1 replaced.
    #[test]
    fn updates_pods_within_max_unavailable() {
        let mut f = Fleet::new(5, "h1");
        let s = unavailable(IntOrString::Int(2));
        for want in [2, 2, 1, 0] {
            assert_eq!(f.roll(&s, "h2"), want);
            assert_eq!(
                f.roll(&s, "h2"),
                0,
                "the budget is spent until they are back"
            );
            assert_eq!(f.recreate("h2"), want);
            assert_eq!(f.roll(&s, "h2"), 0, "new pods not ready count against it");
            f.mark_ready();
        }
        assert!(f.pods.iter().all(|p| p.hash == "h2"));
    }

    /// TestDaemonSetUpdatesWhenNewPodIsNotReady: 5 nodes, maxUnavailable 3; the new pods never
    /// get ready, so after the first three nothing more goes.
    #[test]
    fn new_pods_that_never_get_ready_halt_the_update() {
        let mut f = Fleet::new(5, "h1");
        let s = unavailable(IntOrString::Int(3));
        assert_eq!(f.roll(&s, "h2"), 3);
        assert_eq!(f.recreate("h2"), 3);
        assert_eq!(f.roll(&s, "h2"), 0);
        assert_eq!(f.ready_old(), 2);
    }

    /// TestDaemonSetUpdatesSaveOldHealthyPods: with 10 of 20 new pods never ready, a budget of
    /// up to 9 replaces those 10 again on every update (they are unavailable) and never touches
    /// the 10 ready old ones; a budget of 11 takes one of them.
    #[test]
    fn unavailable_old_pods_go_first_and_healthy_ones_are_saved() {
        let mut f = Fleet::new(20, "h1");
        assert_eq!(f.roll(&unavailable(IntOrString::Int(10)), "h2"), 10);
        assert_eq!(f.recreate("h2"), 10);
        for (i, budget) in [0, 3, 9, 5].into_iter().enumerate() {
            let hash = format!("h3-{i}");
            assert_eq!(
                f.roll(&unavailable(IntOrString::Int(budget)), &hash),
                10,
                "budget {budget}"
            );
            assert_eq!(f.recreate(&hash), 10);
            assert_eq!(f.ready_old(), 10, "budget {budget}");
        }
        assert_eq!(f.roll(&unavailable(IntOrString::Int(11)), "h4"), 11);
        assert_eq!(f.ready_old(), 9);
    }

    #[test]
    fn rolling_update_table() {
        let s1 = unavailable(IntOrString::Int(1));
        let with = |mut p: DaemonPod, f: &dyn Fn(&mut DaemonPod)| {
            f(&mut p);
            p
        };
        let unready = |p: &mut DaemonPod| p.ready = false;
        let deleting = |p: &mut DaemonPod| p.deleting = true;
        let just_ready = |p: &mut DaemonPod| p.ready_since_ms = Some(NOW - 5_000);
        type Case = (
            &'static str,
            DaemonSetUpdateStrategy,
            i64,
            Vec<DaemonPod>,
            Vec<&'static str>,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("all new: nothing", s1.clone(), 0,
                vec![pod("a", "node-0", "h2"), pod("b", "node-1", "h2"), pod("c", "node-2", "h2")], vec![]),
            ("one at a time, in node order", s1.clone(), 0,
                vec![pod("c", "node-2", "h1"), pod("a", "node-0", "h1"), pod("b", "node-1", "h1")], vec!["a"]),
            ("a node being replaced spends the budget", s1.clone(), 0,
                vec![with(pod("a", "node-0", "h1"), &deleting), pod("b", "node-1", "h1"), pod("c", "node-2", "h1")], vec![]),
            ("a node without a pod spends the budget", s1.clone(), 0,
                vec![pod("b", "node-1", "h1"), pod("c", "node-2", "h1")], vec![]),
            ("an unready new pod spends the budget", s1.clone(), 0,
                vec![with(pod("a", "node-0", "h2"), &unready), pod("b", "node-1", "h1"), pod("c", "node-2", "h1")], vec![]),
            ("unready old pods go whatever the budget", s1.clone(), 0,
                vec![with(pod("a", "node-0", "h2"), &unready), with(pod("b", "node-1", "h1"), &unready), with(pod("c", "node-2", "h1"), &unready)], vec!["b", "c"]),
            ("unready old pods first, then the budget's worth", unavailable(IntOrString::Int(2)), 0,
                vec![pod("a", "node-0", "h1"), with(pod("b", "node-1", "h1"), &unready), pod("c", "node-2", "h1")], vec!["b", "a"]),
            ("minReadySeconds: a pod ready 5 s of 10 is not available", s1.clone(), 10,
                vec![with(pod("a", "node-0", "h2"), &just_ready), pod("b", "node-1", "h1"), pod("c", "node-2", "h1")], vec![]),
            ("minReadySeconds: an old pod ready 5 s of 10 is replaced", s1.clone(), 10,
                vec![pod("a", "node-0", "h1"), with(pod("b", "node-1", "h1"), &just_ready), pod("c", "node-2", "h1")], vec!["b"]),
            ("two old pods on a node: left to manage, counted unavailable", s1.clone(), 0,
                vec![pod("a", "node-0", "h1"), pod("a2", "node-0", "h1"), pod("b", "node-1", "h1"), pod("c", "node-2", "h1")], vec![]),
            ("67% of 3 is 3", unavailable(IntOrString::String("67%".into())), 0,
                vec![pod("a", "node-0", "h1"), pod("b", "node-1", "h1"), pod("c", "node-2", "h1")], vec!["a", "b", "c"]),
            ("maxSurge deletes no available old pod without its new one", surge(IntOrString::Int(2)), 0,
                vec![pod("a", "node-0", "h1"), pod("b", "node-1", "h1"), pod("c", "node-2", "h1")], vec![]),
        ];
        for (what, strategy, min_ready, pods, want) in cases {
            let pods: Vec<DaemonPod> = pods.into_iter().map(|p| pulled(p, "h2")).collect();
            let d = rolling_update(Some(&strategy), min_ready, &nodes(3), &pods, "h2", NOW).delete;
            assert_eq!(names(&d), want, "{what}");
            assert!(d.iter().all(|d| d.why == Why::Outdated), "{what}");
        }
    }

    #[test]
    fn availability_follows_min_ready_seconds() {
        let mut p = pod("a", "n", "h");
        p.ready_since_ms = Some(NOW - 10_000);
        assert!(p.is_available(0, NOW));
        assert!(p.is_available(9, NOW));
        assert!(!p.is_available(10, NOW), "not before the full period");
        assert_eq!(p.available_at(10, NOW), Some(NOW + 1));
        assert_eq!(p.available_at(9, NOW), None);
        p.ready = false;
        assert!(!p.is_available(0, NOW));
        assert_eq!(p.available_at(10, NOW), None);
    }
    /// The pre-pull gate: an available old pod goes only once its node pulled the new revision;
    /// a failed pull stops it; unavailable old pods (a dead node's) are replaced regardless.
    #[test]
    fn old_pods_wait_for_their_node_to_pull_the_new_revision() {
        let s2 = unavailable(IntOrString::Int(2));
        let failed = |mut p: DaemonPod| {
            p.next = Some(NextRevision {
                hash: "h2".into(),
                pulled: false,
                error: "manifest unknown".into(),
            });
            p
        };
        let unready = |mut p: DaemonPod| {
            p.ready = false;
            p
        };
        type Case = (
            &'static str,
            Vec<DaemonPod>,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("nothing pulled yet: nothing goes", vec![pod("a", "node-0", "h1"), pod("b", "node-1", "h1"), pod("c", "node-2", "h1")],
                vec![], vec!["node-0", "node-1", "node-2"]),
            ("pulled for another revision: still waits", vec![pulled(pod("a", "node-0", "h1"), "h9"), pod("b", "node-1", "h1"), pod("c", "node-2", "h1")],
                vec![], vec!["node-0", "node-1", "node-2"]),
            ("only pulled nodes go", vec![pod("a", "node-0", "h1"), pulled(pod("b", "node-1", "h1"), "h2"), pulled(pod("c", "node-2", "h1"), "h2")],
                vec!["b", "c"], vec!["node-0"]),
            ("a failed pull stops nothing", vec![failed(pod("a", "node-0", "h1")), failed(pod("b", "node-1", "h1")), failed(pod("c", "node-2", "h1"))],
                vec![], vec!["node-0", "node-1", "node-2"]),
            ("an unavailable old pod is replaced without the gate", vec![unready(pod("a", "node-0", "h1")), pod("b", "node-1", "h1"), pulled(pod("c", "node-2", "h1"), "h2")],
                vec!["a", "c"], vec!["node-1"]),
        ];
        for (what, pods, want, waiting) in cases {
            let u = rolling_update(Some(&s2), 0, &nodes(3), &pods, "h2", NOW);
            assert_eq!(names(&u.delete), want, "{what}");
            assert_eq!(u.waiting_pull, waiting, "{what}");
            assert!(u.create_on.is_empty(), "{what}");
        }
        let n = NextRevision {
            hash: "abc".into(),
            pulled: false,
            error: "pull x: manifest unknown".into(),
        };
        let (status, reason, message) = n.condition();
        assert_eq!((status, reason), ("False", "ErrImagePull"));
        assert_eq!(NextRevision::parse(status, &message), Some(n));
        let ok = pulled(pod("a", "n", "h"), "abc").next.unwrap();
        let (status, _, message) = ok.condition();
        assert_eq!(NextRevision::parse(status, &message), Some(ok));
        assert_eq!(NextRevision::parse("True", "something else"), None);
    }

    /// The pre-pull goes to the next wave only, in the order the rollout takes the nodes: told
    /// (`PULL_NEXT`) while fewer than the budget are told and not yet replaced.
    #[test]
    fn the_next_wave_is_told_to_pull_first() {
        let s2 = unavailable(IntOrString::Int(2));
        let g2 = surge(IntOrString::Int(2));
        let told = |mut p: DaemonPod| {
            p.pull_next = Some("h2".into());
            p
        };
        let failed = |mut p: DaemonPod| {
            p.next = Some(NextRevision {
                hash: "h2".into(),
                pulled: false,
                error: "manifest unknown".into(),
            });
            told(p)
        };
        let legacy = |mut p: DaemonPod| {
            p.pull_next = None;
            p
        };
        let old = |i: usize| pod(&format!("o{i}"), &format!("node-{i}"), "h1");
        // a new pod beside the old one: starting, or ready for a second (minReadySeconds 60)
        let new = |i: usize, ready: bool| {
            let mut p = pod(&format!("n{i}"), &format!("node-{i}"), "h2");
            p.ready = ready;
            p.ready_since_ms = Some(NOW - 1_000);
            p
        };
        type Case<'a> = (
            &'static str,
            &'a DaemonSetUpdateStrategy,
            Vec<DaemonPod>,
            Vec<&'static str>,
        );
        let unready = |mut p: DaemonPod| {
            p.ready = false;
            p
        };
        #[rustfmt::skip]
        let cases: Vec<Case<'_>> = vec![
            ("the first wave, in name order", &s2, (0..5).map(old).collect(), vec!["o0", "o1"]),
            ("told and pulling: nobody else yet", &s2,
                vec![told(old(0)), told(old(1)), old(2), old(3), old(4)], vec![]),
            ("a wave pulled goes, the next is told in the same sync", &s2,
                vec![pulled(told(old(0)), "h2"), pulled(told(old(1)), "h2"), old(2), old(3), old(4)], vec!["o2", "o3"]),
            ("a failed pull frees its slot", &s2,
                vec![failed(old(0)), told(old(1)), old(2), old(3), old(4)], vec!["o2"]),
            ("a pod without the annotation pulls by itself", &s2,
                vec![legacy(old(0)), old(1), old(2), old(3), old(4)], vec!["o1", "o2"]),
            ("an unavailable old pod goes without a pull", &s2,
                vec![unready(old(0)), old(1), old(2), old(3), old(4)], vec!["o1", "o2"]),
            ("surge: the new pods created now pull for themselves", &g2,
                (0..5).map(old).collect(), vec![]),
            ("surge: new pods not ready yet hold the slots", &g2,
                vec![new(0, false), old(0), new(1, false), old(1), old(2), old(3)], vec![]),
            ("surge: once they are ready the next wave pulls", &g2,
                vec![new(0, true), old(0), new(1, true), old(1), old(2), old(3), old(4)], vec!["o2", "o3"]),
        ];
        for (what, strategy, pods, want) in cases {
            let u = rolling_update(Some(strategy), 60, &nodes(5), &pods, "h2", NOW);
            assert_eq!(u.pull_next, want, "{what}: {u:?}");
        }
        // a partition of 4 over 5 nodes: one node goes, one is told
        let pods: Vec<DaemonPod> = (0..5).map(old).collect();
        let u = partitioned_update(Some(&s2), 0, &nodes(5), &pods, "h2", NOW, 4);
        assert_eq!(u.pull_next, ["o0"]);
        let u = partitioned_update(Some(&s2), 0, &nodes(5), &pods, "h2", NOW, 5);
        assert!(u.pull_next.is_empty(), "{u:?}");
    }

    /// update_test.go's rollout driven with the pre-pull order: each wave is told, pulls, goes;
    /// no node is told before the one ahead of it, and never more than the budget at once.
    #[test]
    fn a_rollout_pulls_one_wave_ahead() {
        let s = unavailable(IntOrString::Int(2));
        let mut f = Fleet::new(7, "h1");
        let mut order = Vec::new();
        for _ in 0..20 {
            let u = rolling_update(Some(&s), 0, &f.nodes, &f.pods, "h2", NOW);
            let deleted: Vec<String> = u.delete.iter().map(|d| d.pod.clone()).collect();
            f.pods.retain(|p| !deleted.contains(&p.name));
            // the agents of the told pods pull at once (the next sync sees it)
            for p in &mut f.pods {
                if u.pull_next.contains(&p.name) {
                    p.pull_next = Some("h2".into());
                    order.push(p.node.clone());
                } else if p.pull_next.as_deref() == Some("h2") {
                    *p = pulled(p.clone(), "h2");
                }
            }
            let told = f
                .pods
                .iter()
                .filter(|p| p.hash == "h1" && p.pull_next.as_deref() == Some("h2"))
                .count();
            assert!(told <= 2, "{told} nodes told ahead of the rollout");
            f.recreate("h2");
            f.mark_ready();
        }
        assert_eq!(f.ready_old(), 0, "rolled out: {:?}", f.pods);
        let want: Vec<String> = (0..7).map(|i| format!("node-{i}")).collect();
        assert_eq!(order, want, "told once each, in the rollout's order");
    }

    /// The canary step: a partition of N leaves N nodes on the old revision, with or without
    /// surge; the replacement of an unavailable old pod is not held back (and counts).
    #[test]
    fn a_partition_stops_the_rollout_at_desired_minus_n_nodes() {
        let s2 = unavailable(IntOrString::Int(2));
        let g2 = surge(IntOrString::Int(2));
        let old = |i: usize| pulled(pod(&format!("o{i}"), &format!("node-{i}"), "h1"), "h2");
        let new = |i: usize| pod(&format!("n{i}"), &format!("node-{i}"), "h2");
        let going = |i: usize| {
            let mut p = old(i);
            p.deleting = true;
            p
        };
        let mut dead = old(1);
        dead.ready = false;
        type Case = (
            &'static str,
            i64,
            Vec<DaemonPod>,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("canary: 4 of 5 kept, one goes", 4, (0..5).map(old).collect(), vec!["o0"], vec!["node-0"]),
            ("the canary is updated: nothing more", 4, vec![new(0), old(1), old(2), old(3), old(4)], vec![], vec![]),
            ("the canary on its way: nothing more", 4, vec![going(0), old(1), old(2), old(3), old(4)], vec![], vec![]),
            ("lowered to 2: the budget's worth, up to 3 nodes", 2, vec![new(0), old(1), old(2), old(3), old(4)], vec!["o1", "o2"], vec!["node-1", "node-2"]),
            ("lowered to 2, two updated: one more", 2, vec![new(0), new(1), old(2), old(3), old(4)], vec!["o2"], vec!["node-2"]),
            ("an unavailable old pod is replaced anyway, and counts", 4, vec![old(0), dead.clone(), old(2), old(3), old(4)], vec!["o1"], vec!["node-1"]),
            ("no partition: the budget alone", 0, (0..5).map(old).collect(), vec!["o0", "o1"], vec!["node-0", "node-1"]),
            ("a partition above the fleet: nothing", 9, (0..5).map(old).collect(), vec![], vec![]),
        ];
        for (what, partition, pods, deleted, surged) in cases {
            let u = partitioned_update(Some(&s2), 0, &nodes(5), &pods, "h2", NOW, partition);
            assert_eq!(names(&u.delete), deleted, "maxUnavailable: {what}");
            let u = partitioned_update(Some(&g2), 0, &nodes(5), &pods, "h2", NOW, partition);
            assert_eq!(u.create_on, surged, "maxSurge: {what}");
        }
        assert_eq!(parse_partition("4"), Some(4));
        for bad in ["-1", "25%", "x", ""] {
            assert_eq!(parse_partition(bad), None, "{bad}");
        }
    }

    /// A node that is not ready: its old pod (unavailable: its agent is gone) is replaced first
    /// and counts against the budget once; the terminating pod it leaves does not hold the fleet.
    #[test]
    fn a_not_ready_node_neither_stalls_the_rollout_nor_counts_twice() {
        let s1 = unavailable(IntOrString::Int(1));
        let mut fleet = nodes(3);
        fleet[0].ready = false;
        let mut dead = pulled(pod("a", "node-0", "h1"), "h2");
        dead.ready = false;
        let pods = vec![
            dead.clone(),
            pulled(pod("b", "node-1", "h1"), "h2"),
            pulled(pod("c", "node-2", "h1"), "h2"),
        ];
        let u = rolling_update(Some(&s1), 0, &fleet, &pods, "h2", NOW);
        assert_eq!(
            names(&u.delete),
            ["a"],
            "the dead node's pod first, and only it"
        );
        // its deletion cannot finish while the node is down: the rollout goes on
        let mut pods = pods;
        pods[0].deleting = true;
        let u = rolling_update(Some(&s1), 0, &fleet, &pods, "h2", NOW);
        assert_eq!(names(&u.delete), ["b"]);
        // the same on a ready node holds the budget until it is gone
        fleet[0].ready = true;
        let u = rolling_update(Some(&s1), 0, &fleet, &pods, "h2", NOW);
        assert!(u.delete.is_empty(), "{u:?}");
    }

    #[test]
    fn on_delete_replaces_nothing_until_a_pod_is_deleted() {
        let on_delete = DaemonSetUpdateStrategy {
            type_: Some("OnDelete".into()),
            rolling_update: None,
        };
        let pods = vec![
            pulled(pod("a", "node-0", "h1"), "h2"),
            pulled(pod("b", "node-1", "h1"), "h2"),
        ];
        let u = rolling_update(Some(&on_delete), 0, &nodes(2), &pods, "h2", NOW);
        assert!(u.delete.is_empty() && u.create_on.is_empty(), "{u:?}");
        assert_eq!(u.pull_next, ["a", "b"], "every node pulls at once");
        // `kubectl delete pod a`: once it is gone, manage creates the new revision there
        let m = manage(&nodes(2), &pods[1..], &FailedBackoff::default(), NOW, None);
        assert_eq!(m.create_on, ["node-0"]);
    }

    /// update_test.go's surge cases: new pods beside the old ones within maxSurge, the old ones
    /// going once the new ones are available, unavailable old pods replaced at once.
    #[test]
    fn surge_table() {
        let sur = |n: i32| surge(IntOrString::Int(n));
        let new_unready = |name: &str, node: &str| {
            let mut p = pod(name, node, "h2");
            p.ready = false;
            p.ready_since_ms = None;
            p
        };
        let unready_old = |name: &str, node: &str| {
            let mut p = pod(name, node, "h1");
            p.ready = false;
            p
        };
        type Case = (
            &'static str,
            DaemonSetUpdateStrategy,
            Vec<DaemonPod>,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("surge 1: one new pod beside its old one", sur(1),
                vec![pod("a", "node-0", "h1"), pod("b", "node-1", "h1"), pod("c", "node-2", "h1")], vec!["node-0"], vec![]),
            ("surge 2: two", sur(2),
                vec![pod("a", "node-0", "h1"), pod("b", "node-1", "h1"), pod("c", "node-2", "h1")], vec!["node-0", "node-1"], vec![]),
            ("a new pod not available yet spends the surge", sur(1),
                vec![pod("a", "node-0", "h1"), new_unready("a2", "node-0"), pod("b", "node-1", "h1"), pod("c", "node-2", "h1")], vec![], vec![]),
            ("the new pod available: the old one goes, the next node surges", sur(1),
                vec![pod("a", "node-0", "h1"), pod("a2", "node-0", "h2"), pod("b", "node-1", "h1"), pod("c", "node-2", "h1")], vec!["node-1"], vec!["a"]),
            ("an unavailable old pod gets its new one whatever the surge", sur(1),
                vec![pod("a", "node-0", "h1"), new_unready("a2", "node-0"), unready_old("b", "node-1"), pod("c", "node-2", "h1")], vec!["node-1"], vec![]),
            ("done: nothing", sur(1),
                vec![pod("a", "node-0", "h2"), pod("b", "node-1", "h2"), pod("c", "node-2", "h2")], vec![], vec![]),
            ("100% of 3", surge(IntOrString::String("100%".into())),
                vec![pod("a", "node-0", "h1"), pod("b", "node-1", "h1"), pod("c", "node-2", "h1")], vec!["node-0", "node-1", "node-2"], vec![]),
        ];
        for (what, strategy, pods, create, deletes) in cases {
            let u = rolling_update(Some(&strategy), 0, &nodes(3), &pods, "h2", NOW);
            assert_eq!(u.create_on, create, "{what}");
            assert_eq!(names(&u.delete), deletes, "{what}");
        }
    }

    /// podsShouldBeOnNode with surge: an old and a new pod may share a node until the new one is
    /// available (minReadySeconds) or the old one is not ready; further pods go.
    #[test]
    fn manage_keeps_an_old_and_a_new_pod_while_surging() {
        let fleet = nodes(1);
        let s = Surge {
            hash: "h2",
            min_ready_seconds: 10,
        };
        let mut new = pod("n", "node-0", "h2");
        new.created_ms = NOW;
        new.ready_since_ms = Some(NOW - 5_000);
        let old = pod("o", "node-0", "h1");
        let run = |pods: &[DaemonPod], now: i64| {
            let m = manage(&fleet, pods, &FailedBackoff::default(), now, Some(s));
            names(&m.delete)
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        };
        assert!(
            run(&[old.clone(), new.clone()], NOW).is_empty(),
            "new ready 5 s of 10"
        );
        assert_eq!(
            run(&[old.clone(), new.clone()], NOW + 5_001),
            ["o"],
            "available"
        );
        let mut unready_old = old.clone();
        unready_old.ready = false;
        assert_eq!(run(&[unready_old, new.clone()], NOW), ["o"]);
        let mut new2 = new.clone();
        new2.name = "n2".into();
        new2.created_ms = NOW + 1;
        assert_eq!(run(&[old.clone(), new.clone(), new2], NOW), ["n2"]);
        // without surge the younger of the two goes at once
        let m = manage(&fleet, &[old, new], &FailedBackoff::default(), NOW, None);
        assert_eq!(names(&m.delete), ["n"]);
    }

    /// Why a rollout stalls, the first failing node named, and when the opt-in rollback is due.
    #[test]
    fn stalls_name_the_first_failing_node_and_rollback_waits_for_the_budget() {
        let failing = |name: &str, node: &str, reason: &str| {
            let mut p = pod(name, node, "h2");
            p.ready = false;
            p.problem = Some(Problem {
                reason: reason.into(),
                message: "manifest unknown".into(),
            });
            p
        };
        assert_eq!(stall(&[pod("a", "n1", "h2")], "h2"), None);
        let mut pull_failed = pod("b", "n1", "h1");
        pull_failed.next = Some(NextRevision {
            hash: "h2".into(),
            pulled: false,
            error: "not found".into(),
        });
        let pods = vec![
            failing("c", "n3", "ImagePullBackOff"),
            pull_failed,
            failing("old", "n0", "CrashLoopBackOff"),
        ];
        let mut pods = pods;
        pods[2].hash = "h1".into(); // an old pod's own trouble is not the rollout's
        let st = stall(&pods, "h2").unwrap();
        assert_eq!(st.describe(), "ErrImagePull on node n1: not found");
        assert_eq!(st.failing, 2);
        let st = stall(&pods[..1], "h2").unwrap();
        assert_eq!(
            st.describe(),
            "ImagePullBackOff on node n3: manifest unknown"
        );
        let b = |u, s| Budget {
            desired: 5,
            max_unavailable: u,
            max_surge: s,
        };
        assert!(rollback_due(&st, b(1, 0)));
        assert!(!rollback_due(&st, b(2, 0)));
        assert!(!rollback_due(&st, b(0, 2)));
        assert!(is_failure_reason("ImagePullBackOff") && !is_failure_reason("ContainerCreating"));
    }

    #[test]
    fn a_seen_transition_refines_the_whole_second_transition_time() {
        let mut seen = ReadySeen::default();
        // (event: was_ready, ready, gone, at) -> since(stored)
        seen.observe("a", None, false, false, NOW); // created, not ready
        assert_eq!(seen.since("a", None), None);
        seen.observe("a", Some(false), true, false, NOW + 900); // turned ready at x.9 s
        let stored = Some(NOW); // the condition says x s (whole seconds)
        assert_eq!(seen.since("a", stored), Some(NOW + 900));
        seen.observe("a", Some(true), true, false, NOW + 5_000); // another status write
        assert_eq!(
            seen.since("a", stored),
            Some(NOW + 900),
            "kept from the transition"
        );
        // 1 s minReady: not available at x+1.5 s as the stored time alone would have it
        let mut p = pod("a", "n0", "h");
        p.ready_since_ms = seen.since("a", stored);
        assert!(!p.is_available(1, NOW + 1_500));
        assert_eq!(p.available_at(1, NOW + 1_500), Some(NOW + 1_901));
        assert!(p.is_available(1, NOW + 1_901));
        // a later stored time (a precise writer) wins over an older sighting
        assert_eq!(seen.since("a", Some(NOW + 950)), Some(NOW + 950));
        // not ready again, then ready: the new transition counts
        seen.observe("a", Some(true), false, false, NOW + 6_000);
        assert_eq!(seen.since("a", stored), stored);
        seen.observe("a", Some(false), true, false, NOW + 7_000);
        assert_eq!(seen.since("a", stored), Some(NOW + 7_000));
        // deleted: forgotten
        seen.observe("a", Some(true), true, true, NOW + 8_000);
        assert_eq!(seen.since("a", stored), stored);
        // a pod ready before the controller started (first seen ready, or listed): the stored
        // time, as Kubernetes has it
        seen.observe("b", Some(true), true, false, NOW);
        assert_eq!(seen.since("b", stored), stored);
        // created ready (no previous object): seen now
        seen.observe("c", None, true, false, NOW + 300);
        assert_eq!(seen.since("c", stored), Some(NOW + 300));
        seen.retain(&|uid| uid != "c");
        assert_eq!(seen.since("c", stored), stored);
    }
}
