//! The DaemonSet controller's decisions across the fleet, as Kubernetes' `pkg/controller/daemon`
//! makes them: which nodes get a new pod and which pods go (`manage`, its `podsShouldBeOnNode`),
//! and which old pods a rolling update deletes within its budget (`rollingUpdate` and
//! `updatedDesiredNodeCounts` of `update.go`). Pure: the caller passes the nodes' verdicts, the
//! pods the DaemonSet owns and the time, and carries out the creates and deletes.
//!
//! Nodes are visited in name order where Kubernetes walks a Go map, so a decision is the same
//! every time it is made from the same state.
use std::collections::BTreeMap;

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

/// `manage`: for each node, whether a pod is created, and which pods go (`podsShouldBeOnNode`,
/// without surge). A node with any counted pod, a terminating one included, gets no new pod: a
/// pod going away still occupies its node until it is gone.
pub fn manage(
    nodes: &[NodeFit],
    pods: &[DaemonPod],
    backoff: &FailedBackoff,
    now_ms: i64,
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
            // without surge, only the oldest running pod stays (the list is oldest first)
            for p in running.iter().skip(1) {
                out.delete.push(delete(p, Why::Excess));
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

/// `rollingUpdate` without surge: the old pods to delete so that no more than maxUnavailable of
/// the nodes that should run the pod are without an available one. Old pods that are not
/// available go first and always (counted against the budget); available old pods then go
/// while the budget lasts. A node
/// whose pod is being deleted, or that has none yet, counts as unavailable; so does a new pod
/// not available yet.
///
/// `strategy` is the DaemonSet's: maxSurge and OnDelete are the next step (a seam: with
/// maxSurge set, this deletes first, one node at a time, until surge is built).
pub fn rolling_update(
    strategy: Option<&DaemonSetUpdateStrategy>,
    min_ready_seconds: i64,
    nodes: &[NodeFit],
    pods: &[DaemonPod],
    hash: &str,
    now_ms: i64,
) -> Vec<Delete> {
    let mut by_node = pods_by_node(pods);
    by_node.remove("");
    let desired = nodes.iter().filter(|n| n.should_run).count() as i64;
    for n in nodes.iter().filter(|n| n.should_run) {
        by_node.entry(n.name.as_str()).or_default();
    }
    let b = budget(strategy, desired);
    let max_unavailable = if b.max_surge > 0 {
        b.max_unavailable.max(1)
    } else {
        b.max_unavailable
    };
    let mut unavailable = 0;
    let mut replace = Vec::new();
    let mut candidates = Vec::new();
    for pods in by_node.values() {
        let Some((new, old)) = new_and_old(pods, hash) else {
            unavailable += 1;
            continue;
        };
        match (new, old) {
            (None, None) | (Some(_), Some(_)) => unavailable += 1,
            (Some(new), None) => {
                if !new.is_available(min_ready_seconds, now_ms) {
                    unavailable += 1;
                }
            }
            (None, Some(old)) => {
                if !old.is_available(min_ready_seconds, now_ms) {
                    replace.push(delete(old, Why::Outdated));
                    unavailable += 1;
                } else if unavailable < max_unavailable {
                    candidates.push(delete(old, Why::Outdated));
                }
            }
        }
    }
    let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i64) as usize;
    replace.extend(candidates.into_iter().take(room));
    replace
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
        }
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
            let m = manage(&nodes, &pods, &FailedBackoff::default(), NOW);
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
        }];
        let mut failed = pod("a", "n1", "h");
        failed.phase = Phase::Failed;
        let mut b = FailedBackoff::default();
        let m = manage(&nodes, std::slice::from_ref(&failed), &b, NOW);
        assert_eq!(
            (names(&m.delete), m.failed_on.clone()),
            (vec!["a"], vec!["n1".into()])
        );
        b.next("n1", NOW);
        // the replacement failed too, half a second later: it waits out the 1 s back-off
        let m = manage(&nodes, std::slice::from_ref(&failed), &b, NOW + 500);
        assert!(m.is_empty(), "{m:?}");
        assert_eq!(m.retry_at, Some(NOW + 1_000));
        let m = manage(&nodes, std::slice::from_ref(&failed), &b, NOW + 1_000);
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
            let d = rolling_update(Some(strategy), 0, &self.nodes, &self.pods, hash, NOW);
            self.pods.retain(|p| !d.iter().any(|d| d.pod == p.name));
            d.len()
        }
        /// One manage sync; returns how many pods it created (not ready).
        fn recreate(&mut self, hash: &str) -> usize {
            let m = manage(&self.nodes, &self.pods, &FailedBackoff::default(), NOW);
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
            ("maxSurge (the next step): one node at a time meanwhile", surge(IntOrString::Int(2)), 0,
                vec![pod("a", "node-0", "h1"), pod("b", "node-1", "h1"), pod("c", "node-2", "h1")], vec!["a"]),
        ];
        for (what, strategy, min_ready, pods, want) in cases {
            let d = rolling_update(Some(&strategy), min_ready, &nodes(3), &pods, "h2", NOW);
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
}
