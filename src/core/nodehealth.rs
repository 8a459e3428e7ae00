//! Node health, as kube-controller-manager's node-lifecycle controller keeps it
//! (`pkg/controller/nodelifecycle`: `tryUpdateNodeHealth`, `markPodsNotReady`, the NoSchedule
//! and NoExecute tainting passes) and as its taint-eviction controller acts on it
//! (`pkg/controller/tainteviction`), plus the DefaultTolerationSeconds admission. Pure: the
//! controller (`server::controllers::nodelifecycle`) observes, calls these, and writes.
//!
//! - A node's agent is alive while its Lease's `renewTime` or its Ready condition's
//!   `lastHeartbeatTime` changes. The controller keeps, per node, when it last SAW such a change by
//!   its own clock ([`Health::probe_ms`]), never the times written by the agent: a node with a
//!   skewed clock is judged by the controller's.
//! - Silent for longer than the grace period: every condition the agent owns becomes Unknown
//!   (`NodeStatusUnknown`); a node that never posted a Ready condition gets one
//!   (`NodeStatusNeverUpdated`) after the startup grace period.
//! - Taints follow the Ready condition: False -> `node.kubernetes.io/not-ready`, Unknown ->
//!   `node.kubernetes.io/unreachable`, each NoSchedule and NoExecute (the NoExecute one stamped
//!   with `timeAdded`); True -> neither.
//! - When Ready leaves True, the node's pods are marked Ready=False once (retried until done).
//! - A pod bound to a node with NoExecute taints it does not tolerate is evicted at once; one that
//!   tolerates them all with a limit goes when the first limit runs out; without a limit it stays.
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodSpec, Taint, Toleration};

use crate::core::eligibility::{
    tolerates_taint, TAINT_EFFECT_NO_EXECUTE, TAINT_EFFECT_NO_SCHEDULE, TAINT_NODE_NOT_READY,
    TAINT_NODE_UNREACHABLE,
};
use crate::core::status::time;

/// The reason and message a silent agent's conditions get.
pub const REASON_UNKNOWN: &str = "NodeStatusUnknown";
pub const MESSAGE_UNKNOWN: &str = "daemonset-agent stopped posting node status.";
/// The reason and message of a Ready condition the agent never posted.
pub const REASON_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";
pub const MESSAGE_NEVER_UPDATED: &str = "daemonset-agent never posted node status.";
/// The conditions the node's agent owns (the kubelet's): Unknown when it goes silent.
pub const AGENT_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
/// kube-controller-manager's `--node-monitor-grace-period` and `--node-startup-grace-period`.
pub const DEFAULT_GRACE_MS: i64 = 40_000;
pub const DEFAULT_STARTUP_GRACE_MS: i64 = 60_000;
/// The DefaultTolerationSeconds admission's default for not-ready and unreachable.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// What the controller remembers of a node between passes (`nodeHealthData`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// When the controller last saw the agent alive, by its own clock (unix ms).
    pub probe_ms: i64,
    /// The Ready condition's lastHeartbeatTime and the Lease's renewTime, as last seen.
    heartbeat_ms: Option<i64>,
    lease_ms: Option<i64>,
    /// The Ready condition's status as last seen ("" when the node has none).
    ready: String,
    /// Ready left True and the node's pods are not all marked Ready=False yet.
    pub mark_pods: bool,
}

impl Health {
    /// The node's pods were marked: nothing more to do until Ready is True again.
    pub fn pods_marked(&mut self) {
        self.mark_pods = false;
    }
}

fn ms(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    t.0.as_millisecond()
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The node's Ready status: "True", "False", "Unknown", or "" when it has no Ready condition.
pub fn ready_status(node: &Node) -> &str {
    ready_condition(node).map_or("", |c| c.status.as_str())
}

/// Updates what the controller knows of `node` (with its Lease's renewTime) at `now_ms`.
pub fn observe(prev: Option<&Health>, node: &Node, lease_ms: Option<i64>, now_ms: i64) -> Health {
    let ready = ready_condition(node);
    let heartbeat_ms = ready.and_then(|c| c.last_heartbeat_time.as_ref()).map(ms);
    let status = ready.map_or("", |c| c.status.as_str()).to_string();
    let Some(prev) = prev else {
        // first seen: a node that never posted Ready counts from its creation
        let created = node.metadata.creation_timestamp.as_ref().map(ms);
        let probe_ms = match (ready, created) {
            (None, Some(c)) => c.min(now_ms),
            _ => now_ms,
        };
        return Health {
            probe_ms,
            heartbeat_ms,
            lease_ms,
            mark_pods: false,
            ready: status,
        };
    };
    // any new renewTime is a renewal, earlier ones too: an agent whose clock stepped back
    // renews with times before the last (the controller orders Lease events by
    // resourceVersion, so an older renewal is never replayed here)
    let alive =
        heartbeat_ms != prev.heartbeat_ms || lease_ms.is_some_and(|l| Some(l) != prev.lease_ms);
    let mark_pods = match status.as_str() {
        "True" => false,
        _ => prev.mark_pods || prev.ready == "True",
    };
    Health {
        probe_ms: if alive { now_ms } else { prev.probe_ms },
        heartbeat_ms,
        lease_ms: lease_ms.or(prev.lease_ms),
        ready: status,
        mark_pods,
    }
}

/// The reason (and status word) of the event on a Node whose Ready left True
/// (`RecordNodeStatusChange(..., "NodeNotReady")`).
pub const NODE_NOT_READY: &str = "NodeNotReady";
/// ... and of the one when it is True again.
pub const NODE_READY: &str = "NodeReady";

/// The status change the node controller records on the Node between two observations:
/// NodeNotReady when Ready leaves True (the controller's own Unknown or the agent's False),
/// NodeReady when it comes back to True from either. A first observation records nothing.
pub fn status_change(prev: Option<&Health>, next: &Health) -> Option<&'static str> {
    match (prev?.ready.as_str(), next.ready.as_str()) {
        ("True", "False" | "Unknown") => Some(NODE_NOT_READY),
        ("False" | "Unknown", "True") => Some(NODE_READY),
        _ => None,
    }
}

/// The message of that event, as upstream words it.
pub fn status_change_message(node: &str, change: &str) -> String {
    format!("Node {node} status is now: {change}")
}

/// How long an agent may stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace {
    /// For a node that posted a Ready condition (`--node-monitor-grace-period`).
    pub monitor_ms: i64,
    /// For a node that never did (`--node-startup-grace-period`).
    pub startup_ms: i64,
}

impl Default for Grace {
    fn default() -> Grace {
        Grace {
            monitor_ms: DEFAULT_GRACE_MS,
            startup_ms: DEFAULT_STARTUP_GRACE_MS,
        }
    }
}

/// What the controller does to one node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    /// The node's new conditions (status), when the agent's went Unknown.
    pub conditions: Option<Vec<NodeCondition>>,
    /// The node's new taints (spec), when they change.
    pub taints: Option<Vec<Taint>>,
    /// Mark the node's pods Ready=False.
    pub mark_pods: bool,
    /// When to look at the node again, if nothing is heard from it (unix ms).
    pub check_at_ms: Option<i64>,
}

/// `tryUpdateNodeHealth` and the tainting passes for one node, as of `now_ms`.
pub fn decide(node: &Node, health: &Health, grace: Grace, now_ms: i64) -> Verdict {
    let ready = ready_condition(node);
    let period = if ready.is_some() {
        grace.monitor_ms
    } else {
        grace.startup_ms
    };
    let expires = health.probe_ms + period;
    let silent = now_ms > expires;
    let old = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut conditions = old.clone();
    if silent {
        for c in conditions
            .iter_mut()
            .filter(|c| AGENT_CONDITIONS.contains(&c.type_.as_str()) && c.status != "Unknown")
        {
            c.status = "Unknown".into();
            c.reason = Some(REASON_UNKNOWN.into());
            c.message = Some(MESSAGE_UNKNOWN.into());
            c.last_transition_time = Some(time(now_ms));
        }
        if ready.is_none() {
            conditions.push(NodeCondition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                reason: Some(REASON_NEVER_UPDATED.into()),
                message: Some(MESSAGE_NEVER_UPDATED.into()),
                last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                last_transition_time: Some(time(now_ms)),
            });
        }
    }
    let status = conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map_or("", |c| c.status.as_str());
    let taints = node_taints(node, status, now_ms);
    let was_ready = ready.is_some_and(|c| c.status == "True");
    Verdict {
        mark_pods: health.mark_pods || (was_ready && status != "True"),
        taints,
        check_at_ms: (!silent).then_some(expires + 1),
        conditions: (conditions != old).then_some(conditions),
    }
}

/// The taints the node-lifecycle controller owns.
const OWNED: [(&str, &str); 4] = [
    (TAINT_NODE_NOT_READY, TAINT_EFFECT_NO_SCHEDULE),
    (TAINT_NODE_NOT_READY, TAINT_EFFECT_NO_EXECUTE),
    (TAINT_NODE_UNREACHABLE, TAINT_EFFECT_NO_SCHEDULE),
    (TAINT_NODE_UNREACHABLE, TAINT_EFFECT_NO_EXECUTE),
];

/// The node's taints with those the controller owns as the Ready status `ready` wants them;
/// None when nothing changes. A wanted taint already there is kept (with its timeAdded).
fn node_taints(node: &Node, ready: &str, now_ms: i64) -> Option<Vec<Taint>> {
    let wanted_key = match ready {
        "False" => Some(TAINT_NODE_NOT_READY),
        "Unknown" => Some(TAINT_NODE_UNREACHABLE),
        _ => None,
    };
    let old = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let owned = |t: &Taint| OWNED.contains(&(t.key.as_str(), t.effect.as_str()));
    let mut taints: Vec<Taint> = old
        .iter()
        .filter(|t| !owned(t) || Some(t.key.as_str()) == wanted_key)
        .cloned()
        .collect();
    if let Some(key) = wanted_key {
        for effect in [TAINT_EFFECT_NO_SCHEDULE, TAINT_EFFECT_NO_EXECUTE] {
            if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                taints.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    value: None,
                    time_added: (effect == TAINT_EFFECT_NO_EXECUTE).then(|| time(now_ms)),
                });
            }
        }
    }
    (taints != old).then_some(taints)
}

/// A pod of the node to mark Ready=False (`markPodsNotReady`): one not terminal whose Ready
/// condition is not False already.
pub fn needs_not_ready(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return false;
    }
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status != "False")
}

/// What the taint-eviction controller does with a pod on a node with NoExecute taints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// It tolerates every NoExecute taint for ever (or the node has none).
    Keep,
    /// Delete it now.
    Now,
    /// Delete it at this time (unix ms) unless the taints go first.
    At(i64),
}

/// The eviction of a pod with `tolerations` from a node with `taints` (only the NoExecute ones
/// count), as of `now_ms`. A tolerated taint with a limit counts from its `timeAdded`, or from
/// `seen_ms` (when the controller first saw it) for one without.
pub fn eviction(
    tolerations: &[Toleration],
    taints: &[Taint],
    seen_ms: i64,
    now_ms: i64,
) -> Eviction {
    let mut at: Option<i64> = None;
    for taint in taints
        .iter()
        .filter(|t| t.effect == TAINT_EFFECT_NO_EXECUTE)
    {
        // the first toleration that tolerates it decides (GetMatchingTolerations)
        let Some(t) = tolerations.iter().find(|t| tolerates_taint(t, taint)) else {
            return Eviction::Now;
        };
        if let Some(secs) = t.toleration_seconds {
            let added = taint.time_added.as_ref().map_or(seen_ms, ms);
            let due = added + secs.max(0) * 1000;
            at = Some(at.map_or(due, |a| a.min(due)));
        }
    }
    match at {
        None => Eviction::Keep,
        Some(due) if due <= now_ms => Eviction::Now,
        Some(due) => Eviction::At(due),
    }
}

/// The DefaultTolerationSeconds admission: a pod that does not tolerate not-ready or unreachable
/// NoExecute taints gets a toleration of them for `not_ready` and `unreachable` seconds
/// (kube-apiserver's flags, `DEFAULT_TOLERATION_SECONDS` each by default).
pub fn add_default_toleration_seconds(spec: &mut PodSpec, not_ready: i64, unreachable: i64) {
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, secs) in [
        (TAINT_NODE_NOT_READY, not_ready),
        (TAINT_NODE_UNREACHABLE, unreachable),
    ] {
        let covered = tolerations.iter().any(|t| {
            let k = t.key.as_deref().unwrap_or("");
            let e = t.effect.as_deref().unwrap_or("");
            (k == key || k.is_empty()) && (e == TAINT_EFFECT_NO_EXECUTE || e.is_empty())
        });
        if !covered {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(TAINT_EFFECT_NO_EXECUTE.into()),
                toleration_seconds: Some(secs),
                value: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const T0: i64 = 1_800_000_000_000;
    const GRACE: Grace = Grace {
        monitor_ms: 40_000,
        startup_ms: 60_000,
    };

    fn iso(ms: i64) -> Value {
        serde_json::to_value(time(ms)).unwrap()
    }

    /// A node whose Ready condition has `status` and heartbeat `beat`, with `taints`.
    fn node(ready: Option<(&str, i64)>, taints: Value) -> Node {
        let conditions: Vec<Value> = ready
            .map(|(status, beat)| {
                vec![
                    json!({"type": "Ready", "status": status, "reason": "AgentReady",
                        "lastHeartbeatTime": iso(beat), "lastTransitionTime": iso(T0 - 600_000)}),
                    json!({"type": "NetworkUnavailable", "status": "False"}),
                ]
            })
            .unwrap_or_default();
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "creationTimestamp": iso(T0 - 3_600_000)},
            "spec": {"taints": taints},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    fn keys(taints: &[Taint]) -> Vec<String> {
        taints
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    fn cond<'a>(v: &'a Verdict, ty: &str) -> &'a NodeCondition {
        v.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == ty)
            .unwrap()
    }

    /// Liveness is the controller's observation of a change, never the agent's timestamps.
    #[test]
    fn the_agent_is_alive_while_its_lease_or_heartbeat_changes() {
        let n = node(Some(("True", T0 - 999_000)), json!([]));
        let h = observe(None, &n, Some(T0 - 999_000), T0);
        assert_eq!(h.probe_ms, T0, "first seen: now, whatever it says");
        // (lease, heartbeat, now) -> probe
        let cases = [
            (Some(T0 - 999_000), T0 - 999_000, T0 + 30_000, T0),
            (Some(T0 + 5_000), T0 - 999_000, T0 + 30_000, T0 + 30_000),
            (Some(T0 - 999_000), T0 + 1, T0 + 30_000, T0 + 30_000),
            // a lease renewed by an agent whose clock stepped back is a sign of life too
            (Some(T0 - 1_999_000), T0 - 999_000, T0 + 30_000, T0 + 30_000),
            (None, T0 - 999_000, T0 + 30_000, T0),
        ];
        for (lease, beat, now, want) in cases {
            let n = node(Some(("True", beat)), json!([]));
            let h2 = observe(Some(&h), &n, lease, now);
            assert_eq!(h2.probe_ms, want, "{lease:?} {beat} {now}");
        }
        // a node that never posted Ready counts from its creation
        let fresh = observe(None, &node(None, json!([])), None, T0);
        assert_eq!(fresh.probe_ms, T0 - 3_600_000);
    }

    #[test]
    fn a_silent_node_goes_unknown_and_unreachable_and_comes_back() {
        struct Case {
            what: &'static str,
            ready: Option<(&'static str, i64)>,
            taints: Value,
            probe_ms: i64,
            now: i64,
            ready_after: Option<&'static str>,
            taints_after: Option<Vec<&'static str>>,
            mark_pods: bool,
            check_at: Option<i64>,
        }
        let unreachable = json!([
            {"key": "dedicated", "value": "infra", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": iso(T0 - 5_000)},
        ]);
        let cases = [
            Case {
                what: "heard within the grace period: nothing, look again when it ends",
                ready: Some(("True", T0)),
                taints: json!([]),
                probe_ms: T0,
                now: T0 + 40_000,
                ready_after: None,
                taints_after: None,
                mark_pods: false,
                check_at: Some(T0 + 40_001),
            },
            Case {
                what: "silent past the grace period: Unknown, unreachable taints, pods marked",
                ready: Some(("True", T0)),
                taints: json!([{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]),
                probe_ms: T0,
                now: T0 + 40_001,
                ready_after: Some("Unknown"),
                taints_after: Some(vec![
                    "dedicated:NoSchedule",
                    "node.kubernetes.io/unreachable:NoSchedule",
                    "node.kubernetes.io/unreachable:NoExecute",
                ]),
                mark_pods: true,
                check_at: None,
            },
            Case {
                what: "Unknown already, tainted already: nothing more",
                ready: Some(("Unknown", T0)),
                taints: unreachable.clone(),
                probe_ms: T0,
                now: T0 + 90_000,
                ready_after: None,
                taints_after: None,
                mark_pods: false,
                check_at: None,
            },
            Case {
                what: "the agent posted Ready again: its taints go, nothing else",
                ready: Some(("True", T0 + 90_000)),
                taints: unreachable.clone(),
                probe_ms: T0 + 90_000,
                now: T0 + 90_000,
                ready_after: None,
                taints_after: Some(vec!["dedicated:NoSchedule"]),
                mark_pods: false,
                check_at: Some(T0 + 130_001),
            },
            Case {
                what: "the agent says NotReady: not-ready taints replace unreachable ones",
                ready: Some(("False", T0)),
                taints: unreachable,
                probe_ms: T0,
                now: T0 + 1_000,
                ready_after: None,
                taints_after: Some(vec![
                    "dedicated:NoSchedule",
                    "node.kubernetes.io/not-ready:NoSchedule",
                    "node.kubernetes.io/not-ready:NoExecute",
                ]),
                mark_pods: false,
                check_at: Some(T0 + 40_001),
            },
            Case {
                what: "never posted Ready: the startup grace period, then Unknown",
                ready: None,
                taints: json!([]),
                probe_ms: T0 - 3_600_000,
                now: T0,
                ready_after: Some("Unknown"),
                taints_after: Some(vec![
                    "node.kubernetes.io/unreachable:NoSchedule",
                    "node.kubernetes.io/unreachable:NoExecute",
                ]),
                mark_pods: false,
                check_at: None,
            },
            Case {
                what: "never posted Ready, within the startup grace period",
                ready: None,
                taints: json!([]),
                probe_ms: T0,
                now: T0 + 59_000,
                ready_after: None,
                taints_after: None,
                mark_pods: false,
                check_at: Some(T0 + 60_001),
            },
        ];
        for c in cases {
            let n = node(c.ready, c.taints);
            let mut h = observe(None, &n, None, c.probe_ms);
            h.probe_ms = c.probe_ms;
            let v = decide(&n, &h, GRACE, c.now);
            let ready = v
                .conditions
                .as_ref()
                .map(|_| cond(&v, "Ready").status.as_str());
            assert_eq!(ready, c.ready_after, "{}", c.what);
            assert_eq!(
                v.taints.as_deref().map(keys),
                c.taints_after
                    .map(|t| t.iter().map(|s| s.to_string()).collect()),
                "{}",
                c.what
            );
            assert_eq!(v.mark_pods, c.mark_pods, "{}", c.what);
            assert_eq!(v.check_at_ms, c.check_at, "{}", c.what);
        }
    }

    #[test]
    fn unknown_conditions_say_why_and_keep_what_the_agent_does_not_own() {
        let n = node(Some(("True", T0)), json!([]));
        let h = observe(None, &n, None, T0);
        let v = decide(&n, &h, GRACE, T0 + 41_000);
        let ready = cond(&v, "Ready");
        assert_eq!(ready.reason.as_deref(), Some(REASON_UNKNOWN));
        assert_eq!(ready.message.as_deref(), Some(MESSAGE_UNKNOWN));
        assert_eq!(
            ms(ready.last_transition_time.as_ref().unwrap()),
            T0 + 41_000
        );
        assert_eq!(
            ms(ready.last_heartbeat_time.as_ref().unwrap()),
            T0,
            "the last heartbeat stays"
        );
        assert_eq!(cond(&v, "NetworkUnavailable").status, "False");
        let taints = v.taints.unwrap();
        let no_execute = taints.iter().find(|t| t.effect == "NoExecute").unwrap();
        assert_eq!(ms(no_execute.time_added.as_ref().unwrap()), T0 + 41_000);
        assert!(taints
            .iter()
            .find(|t| t.effect == "NoSchedule")
            .unwrap()
            .time_added
            .is_none());
        let never = decide(&node(None, json!([])), &h, GRACE, T0 + 61_000);
        assert_eq!(
            cond(&never, "Ready").reason.as_deref(),
            Some(REASON_NEVER_UPDATED)
        );
    }

    /// Pods are marked once when Ready leaves True, retried until done, and forgotten when Ready
    /// is True again.
    #[test]
    fn status_changes_are_recorded_once_per_crossing() {
        let at = |ready: Option<(&str, i64)>, prev: Option<&Health>, now: i64| {
            observe(prev, &node(ready, json!([])), None, now)
        };
        let first = at(Some(("True", T0)), None, T0);
        assert_eq!(
            status_change(None, &first),
            None,
            "a first look records nothing"
        );
        let beat = at(Some(("True", T0 + 1_000)), Some(&first), T0 + 1_000);
        assert_eq!(
            status_change(Some(&first), &beat),
            None,
            "a heartbeat is no change"
        );
        for (down, up) in [("Unknown", "True"), ("False", "True")] {
            let gone = at(Some((down, T0)), Some(&beat), T0 + 2_000);
            assert_eq!(
                status_change(Some(&beat), &gone),
                Some(NODE_NOT_READY),
                "{down}"
            );
            let still = at(Some((down, T0)), Some(&gone), T0 + 3_000);
            assert_eq!(status_change(Some(&gone), &still), None, "once");
            let back = at(Some((up, T0 + 4_000)), Some(&still), T0 + 4_000);
            assert_eq!(
                status_change(Some(&still), &back),
                Some(NODE_READY),
                "{down} -> {up}"
            );
        }
        assert_eq!(
            status_change_message("n1", NODE_NOT_READY),
            "Node n1 status is now: NodeNotReady"
        );
    }

    #[test]
    fn pods_are_marked_when_ready_leaves_true() {
        let ready = node(Some(("True", T0)), json!([]));
        let unknown = node(Some(("Unknown", T0)), json!([]));
        let h = observe(None, &ready, None, T0);
        assert!(!h.mark_pods);
        let mut h = observe(Some(&h), &unknown, None, T0 + 41_000);
        assert!(h.mark_pods, "True -> Unknown");
        assert!(decide(&unknown, &h, GRACE, T0 + 41_000).mark_pods);
        h.pods_marked();
        let h = observe(Some(&h), &unknown, None, T0 + 45_000);
        assert!(!h.mark_pods, "marked already");
        assert!(!decide(&unknown, &h, GRACE, T0 + 45_000).mark_pods);
        let h = observe(Some(&h), &ready, None, T0 + 50_000);
        assert!(!h.mark_pods);
    }

    #[test]
    fn pods_to_mark_are_those_still_ready() {
        let pod = |phase: &str, ready: &str| -> Pod {
            serde_json::from_value(json!({"status": {"phase": phase,
                "conditions": [{"type": "Ready", "status": ready}]}}))
            .unwrap()
        };
        assert!(needs_not_ready(&pod("Running", "True")));
        assert!(!needs_not_ready(&pod("Running", "False")));
        assert!(!needs_not_ready(&pod("Succeeded", "True")));
        assert!(!needs_not_ready(&Pod::default()));
    }

    fn toleration(key: &str, effect: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: Some("Exists".into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: secs,
            value: None,
        }
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: added.map(time),
        }
    }

    #[test]
    fn eviction_follows_the_tolerations() {
        let unreachable = taint(TAINT_NODE_UNREACHABLE, "NoExecute", Some(T0));
        let other = taint("maintenance", "NoExecute", None);
        let no_schedule = taint(TAINT_NODE_UNREACHABLE, "NoSchedule", None);
        let daemon = [toleration(TAINT_NODE_UNREACHABLE, "NoExecute", None)];
        let defaulted = [toleration(TAINT_NODE_UNREACHABLE, "NoExecute", Some(300))];
        let seen = T0 + 10_000;
        // (tolerations, taints, now) -> eviction
        let cases: Vec<(Vec<Toleration>, Vec<Taint>, i64, Eviction)> = vec![
            (vec![], vec![no_schedule.clone()], T0, Eviction::Keep),
            (vec![], vec![unreachable.clone()], T0, Eviction::Now),
            (
                daemon.to_vec(),
                vec![unreachable.clone()],
                T0 + 999_000,
                Eviction::Keep,
            ),
            (
                defaulted.to_vec(),
                vec![unreachable.clone()],
                T0,
                Eviction::At(T0 + 300_000),
            ),
            (
                defaulted.to_vec(),
                vec![unreachable.clone()],
                T0 + 300_000,
                Eviction::Now,
            ),
            // a taint it does not tolerate: at once
            (
                defaulted.to_vec(),
                vec![unreachable.clone(), other.clone()],
                T0,
                Eviction::Now,
            ),
            // tolerates everything, the first limit decides; without timeAdded, from first seen
            (
                vec![
                    toleration(TAINT_NODE_UNREACHABLE, "NoExecute", Some(300)),
                    toleration("", "", Some(60)),
                ],
                vec![unreachable.clone(), other.clone()],
                T0,
                Eviction::At(seen + 60_000),
            ),
            // the first matching toleration decides, not the most lenient
            (
                vec![
                    toleration("", "NoExecute", Some(0)),
                    toleration(TAINT_NODE_UNREACHABLE, "NoExecute", None),
                ],
                vec![unreachable.clone()],
                T0,
                Eviction::Now,
            ),
        ];
        for (tolerations, taints, now, want) in cases {
            assert_eq!(
                eviction(&tolerations, &taints, seen, now),
                want,
                "{tolerations:?} {taints:?}"
            );
        }
    }

    #[test]
    fn default_toleration_seconds_only_where_none_is_set() {
        let keys = |spec: &PodSpec| -> Vec<(String, Option<i64>)> {
            spec.tolerations
                .iter()
                .flatten()
                .map(|t| (t.key.clone().unwrap_or_default(), t.toleration_seconds))
                .collect()
        };
        let d = DEFAULT_TOLERATION_SECONDS;
        let mut bare = PodSpec::default();
        add_default_toleration_seconds(&mut bare, d, d);
        assert_eq!(
            keys(&bare),
            [
                (TAINT_NODE_NOT_READY.to_string(), Some(300)),
                (TAINT_NODE_UNREACHABLE.to_string(), Some(300))
            ]
        );
        let mut short = PodSpec::default();
        add_default_toleration_seconds(&mut short, 7, 3);
        assert_eq!(
            keys(&short),
            [
                (TAINT_NODE_NOT_READY.to_string(), Some(7)),
                (TAINT_NODE_UNREACHABLE.to_string(), Some(3))
            ],
            "the server's flags"
        );
        let mut twice = bare.clone();
        add_default_toleration_seconds(&mut twice, d, d);
        assert_eq!(twice, bare, "idempotent");
        let mut daemon = PodSpec {
            tolerations: Some(vec![
                toleration(TAINT_NODE_NOT_READY, "NoExecute", None),
                toleration(TAINT_NODE_UNREACHABLE, "", Some(5)),
            ]),
            ..Default::default()
        };
        let before = daemon.clone();
        add_default_toleration_seconds(&mut daemon, d, d);
        assert_eq!(daemon, before, "its own tolerations stand");
        let mut everything = PodSpec {
            tolerations: Some(vec![toleration("", "", None)]),
            ..Default::default()
        };
        add_default_toleration_seconds(&mut everything, d, d);
        assert_eq!(everything.tolerations.unwrap().len(), 1);
    }
}
