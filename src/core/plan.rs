//! The reconcile plan: which pods this node should run (from its DaemonSets and its Node), and for
//! one pod, what to do to its containers given what containerd reports. Pure: the caller passes
//! the time and owns every side effect.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, PodSpec};

use crate::core::eligibility;
use crate::core::hash;

/// Label Kubernetes puts on daemon pods: the hash of the template they were made from.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// Kubelet's container restart back-off: 10 s doubling to 300 s, forgotten after 10 min.
pub const BACKOFF_INITIAL_MS: i64 = 10_000;
pub const BACKOFF_MAX_MS: i64 = 300_000;
pub const BACKOFF_RESET_MS: i64 = 600_000;
/// A container without a running task younger than this may still be starting (or containerd's
/// task list missed it for a moment): leave it alone until then.
pub const CREATED_GRACE_MS: i64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The DaemonSet a pod belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// A pod this node should run.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPod {
    pub key: PodKey,
    /// Local identity of the pod (sandbox, container labels); stable for a (DaemonSet uid, node,
    /// template hash).
    pub uid: String,
    pub owner: Owner,
    pub template_hash: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The template's pod spec with the automatic tolerations and `nodeName` set.
    pub spec: PodSpec,
    /// false: another revision of the same DaemonSet still has containers here; this one waits
    /// until they are gone (maxSurge 0: the old pod goes first).
    pub may_start: bool,
}

/// A desired pod `default/NAME` (uid `uid-NAME`) of DaemonSet `default/ds`, running `container`:
/// the fixture of the tests that need one pod.
#[cfg(test)]
pub fn test_pod(name: &str, container: k8s_openapi::api::core::v1::Container) -> DesiredPod {
    DesiredPod {
        key: PodKey {
            namespace: "default".into(),
            name: name.into(),
        },
        uid: format!("uid-{name}"),
        owner: Owner {
            namespace: "default".into(),
            name: "ds".into(),
            uid: "uid-ds".into(),
        },
        template_hash: "h".into(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        spec: PodSpec {
            containers: vec![container],
            ..Default::default()
        },
        may_start: true,
    }
}

/// The pod name: `<ds>-<5 characters>`, as generateName makes them, but derived from the
/// DaemonSet uid, node and template hash so that a restarted agent finds the same name.
pub fn pod_name(ds_name: &str, ds_uid: &str, node: &str, template_hash: &str) -> String {
    let mut base: String = ds_name.chars().take(57).collect();
    base.push('-');
    let h = hash::fnv32a(format!("{ds_uid}/{node}/{template_hash}").as_bytes());
    let suffix = hash::safe_encode(&format!("{:05}", h % 100_000));
    base.push_str(&suffix);
    base
}

/// The local pod uid: a UUID-shaped rendering of a SHA-256 over the same inputs as the name.
pub fn pod_uid(ds_uid: &str, node: &str, template_hash: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("{ds_uid}/{node}/{template_hash}").as_bytes());
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

/// The pods this node should run. `present` names the pods that have containers on the node now:
/// a pod whose node no longer passes the DaemonSet's predicates but may continue running
/// (a NoSchedule taint added) is kept, as Kubernetes does.
pub fn desired_pods<'a>(
    node: &Node,
    daemonsets: impl IntoIterator<Item = &'a DaemonSet>,
    present: &BTreeSet<PodKey>,
) -> Vec<DesiredPod> {
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    for ds in daemonsets {
        let (Some(name), Some(uid), Some(spec)) = (
            ds.metadata.name.as_ref(),
            ds.metadata.uid.as_ref(),
            ds.spec.as_ref(),
        ) else {
            continue;
        };
        if ds.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let namespace = ds
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let template_hash = hash::template_hash(
            &spec.template,
            ds.status.as_ref().and_then(|s| s.collision_count),
        );
        let key = PodKey {
            namespace: namespace.clone(),
            name: pod_name(name, uid, &node_name, &template_hash),
        };
        let verdict = eligibility::node_should_run(node, ds);
        if !(verdict.should_run || verdict.should_continue_running && present.contains(&key)) {
            continue;
        }
        let mut pod_spec = spec.template.spec.clone().unwrap_or_default();
        eligibility::add_daemon_tolerations(&mut pod_spec);
        pod_spec.node_name = Some(node_name.clone());
        let meta = &spec.template.metadata;
        let mut labels = meta
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(REVISION_HASH_LABEL.into(), template_hash.clone());
        let annotations = meta
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        out.push(DesiredPod {
            uid: pod_uid(uid, &node_name, &template_hash),
            key,
            owner: Owner {
                namespace,
                name: name.clone(),
                uid: uid.clone(),
            },
            template_hash,
            labels,
            annotations,
            spec: pod_spec,
            may_start: true,
        });
    }
    out
}

/// Marks the desired pods that must wait for an older revision of their DaemonSet to go.
/// `present_owners` maps each pod present on the node to the uid of its DaemonSet.
pub fn hold_for_old_revisions(
    desired: &mut [DesiredPod],
    present_owners: &BTreeMap<PodKey, String>,
) {
    for d in desired.iter_mut() {
        d.may_start = present_owners.contains_key(&d.key)
            || !present_owners
                .iter()
                .any(|(k, owner)| *owner == d.owner.uid && *k != d.key);
    }
}

/// A container as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub id: String,
    pub name: String,
    pub restart_count: u32,
    pub state: State,
    /// Unix milliseconds of the container's creation.
    pub created_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Exited {
        code: u32,
        /// Unix milliseconds of the exit, if known.
        at_ms: Option<i64>,
    },
}

/// Restart back-off of one container: when it was last (re)started and the delay before the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub last_start_ms: i64,
    pub delay_ms: i64,
}

/// When the container may be started again.
pub fn restart_allowed_at(b: Option<&Backoff>, now_ms: i64) -> i64 {
    match b {
        Some(b) if now_ms - b.last_start_ms <= BACKOFF_RESET_MS => b.last_start_ms + b.delay_ms,
        _ => now_ms,
    }
}

/// The back-off after a (re)start at `now_ms`: 10 s, doubling to 300 s, reset after 10 min.
pub fn after_restart(b: Option<&Backoff>, now_ms: i64) -> Backoff {
    let delay_ms = match b {
        Some(b) if now_ms - b.last_start_ms <= BACKOFF_RESET_MS => {
            (b.delay_ms * 2).min(BACKOFF_MAX_MS)
        }
        _ => BACKOFF_INITIAL_MS,
    };
    Backoff {
        last_start_ms: now_ms,
        delay_ms,
    }
}

/// The newest incarnation of each container, by name (the highest restart count, then the latest
/// creation).
pub fn newest(observed: &[Observed]) -> BTreeMap<String, &Observed> {
    let mut m: BTreeMap<String, &Observed> = BTreeMap::new();
    for o in observed {
        let keep = m.get(&o.name).is_none_or(|cur| {
            (o.restart_count, o.created_ms) > (cur.restart_count, cur.created_ms)
        });
        if keep {
            m.insert(o.name.clone(), o);
        }
    }
    m
}

/// The back-off of each container, rebuilt from its newest incarnation as containerd keeps it, for
/// a worker that did not start that incarnation itself (the agent restarted since): incarnation
/// n >= 1 was a restart, and the worker that made it recorded `after_restart` as it started it.
///
/// The record holds the restart count (a label) and the creation time, in whole seconds; the
/// earlier incarnations are gone (the plan removes them). So the delay is taken as that of n
/// restarts in a row, each within 10 min of the last (10 s doubling to 300 s), the longest it can
/// have been, and the start as the end of the second containerd names, the latest it can have
/// been (a container is created after the worker's start time): a rebuilt back-off never lets a
/// container restart earlier than the lost one would have, and its count goes on doubling it. It
/// can be longer, by up to the cap, where a restart after 10 quiet minutes had reset the delay to
/// 10 s. The exit time adds nothing here: the back-off counts from the (re)start, as in
/// `plan_pod`, and a container that exited more than 10 min after it started is past both its
/// delay and the reset.
pub fn recorded_backoff(observed: &[Observed]) -> BTreeMap<String, Backoff> {
    newest(observed)
        .into_iter()
        .filter(|(_, o)| o.restart_count > 0)
        .map(|(name, o)| {
            let doublings = (o.restart_count - 1).min(16);
            let delay_ms = (BACKOFF_INITIAL_MS << doublings).min(BACKOFF_MAX_MS);
            let b = Backoff {
                last_start_ms: o.created_ms + 999,
                delay_ms,
            };
            (name, b)
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create and start container `name` of the pod (creating the sandbox first if needed).
    Start { name: String, restart_count: u32 },
    /// Stop (with the grace period when it runs) and remove a container.
    Remove { id: String, grace_seconds: i64 },
    /// Remove the pod's sandbox: the pod is gone.
    RemoveSandbox,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodPlan {
    pub actions: Vec<Action>,
    /// Containers waiting for their back-off, and until when (unix ms).
    pub waiting: BTreeMap<String, i64>,
}

impl PodPlan {
    /// The earliest back-off deadline: when to look at this pod again.
    pub fn requeue_at(&self) -> Option<i64> {
        self.waiting.values().min().copied()
    }
}

/// What to do to one pod's containers. `spec` is None when the pod should not exist;
/// `backoff` holds the back-off of the containers that were restarted (or failed to start).
pub fn plan_pod(
    spec: Option<&PodSpec>,
    may_start: bool,
    observed: &[Observed],
    backoff: &BTreeMap<String, Backoff>,
    now_ms: i64,
) -> PodPlan {
    let mut plan = PodPlan::default();
    let grace = spec
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    let wanted: Vec<&str> = spec
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    for o in observed {
        if !wanted.contains(&o.name.as_str()) {
            plan.actions.push(remove(o, grace));
        }
    }
    if spec.is_none() {
        plan.actions.push(Action::RemoveSandbox);
        return plan;
    }
    for name in wanted {
        let mut mine: Vec<&Observed> = observed.iter().filter(|o| o.name == name).collect();
        // newest incarnation first
        mine.sort_by_key(|o| std::cmp::Reverse((o.restart_count, o.created_ms)));
        if let Some(pos) = mine.iter().position(|o| o.state == State::Running) {
            for (i, o) in mine.iter().enumerate() {
                if i != pos {
                    plan.actions.push(remove(o, grace));
                }
            }
            continue;
        }
        if let Some(young) = mine
            .first()
            .filter(|o| o.state == State::Created && now_ms - o.created_ms < CREATED_GRACE_MS)
        {
            plan.waiting
                .insert(name.to_string(), young.created_ms + CREATED_GRACE_MS);
            continue;
        }
        let next_count = mine.first().map(|o| match o.state {
            State::Created => o.restart_count,
            _ => o.restart_count + 1,
        });
        let at = restart_allowed_at(backoff.get(name), now_ms);
        if at > now_ms || !may_start {
            if may_start {
                plan.waiting.insert(name.to_string(), at);
            }
            // keep the newest dead container for status until the restart; drop the others
            for o in mine.iter().skip(1) {
                plan.actions.push(remove(o, grace));
            }
            continue;
        }
        for o in &mine {
            plan.actions.push(remove(o, grace));
        }
        plan.actions.push(Action::Start {
            name: name.to_string(),
            restart_count: next_count.unwrap_or(0),
        });
    }
    plan
}

fn remove(o: &Observed, grace: i64) -> Action {
    Action::Remove {
        id: o.id.clone(),
        grace_seconds: if o.state == State::Running { grace } else { 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Container;

    fn spec(names: &[&str]) -> PodSpec {
        PodSpec {
            containers: names
                .iter()
                .map(|n| Container {
                    name: n.to_string(),
                    image: Some("busybox".into()),
                    ..Default::default()
                })
                .collect(),
            termination_grace_period_seconds: Some(5),
            ..Default::default()
        }
    }

    fn obs(id: &str, name: &str, restarts: u32, state: State) -> Observed {
        Observed {
            id: id.into(),
            name: name.into(),
            restart_count: restarts,
            state,
            created_ms: i64::from(restarts),
        }
    }

    fn start(name: &str, n: u32) -> Action {
        Action::Start {
            name: name.into(),
            restart_count: n,
        }
    }

    fn rm(id: &str, grace: i64) -> Action {
        Action::Remove {
            id: id.into(),
            grace_seconds: grace,
        }
    }

    const NOW: i64 = 1_000_000_000;
    const EXITED: State = State::Exited {
        code: 1,
        at_ms: Some(NOW - 1000),
    };

    #[test]
    fn plan_pod_table() {
        let recent = Backoff {
            last_start_ms: NOW - 2_000,
            delay_ms: 10_000,
        };
        let old = Backoff {
            last_start_ms: NOW - 20_000,
            delay_ms: 10_000,
        };
        let stale = Backoff {
            last_start_ms: NOW - BACKOFF_RESET_MS - 1,
            delay_ms: 300_000,
        };
        #[rustfmt::skip]
        type Case = (&'static str, Option<PodSpec>, bool, Vec<Observed>, Option<Backoff>, Vec<Action>, Option<i64>);
        let cases: Vec<Case> = vec![
            (
                "nothing there: start",
                Some(spec(&["a"])),
                true,
                vec![],
                None,
                vec![start("a", 0)],
                None,
            ),
            (
                "two containers: start both",
                Some(spec(&["a", "b"])),
                true,
                vec![],
                None,
                vec![start("a", 0), start("b", 0)],
                None,
            ),
            (
                "running: nothing to do",
                Some(spec(&["a"])),
                true,
                vec![obs("x", "a", 0, State::Running)],
                None,
                vec![],
                None,
            ),
            (
                "duplicate running: keep newest",
                Some(spec(&["a"])),
                true,
                vec![
                    obs("x", "a", 0, State::Running),
                    obs("y", "a", 1, State::Running),
                ],
                None,
                vec![rm("x", 5)],
                None,
            ),
            (
                "first exit: restart at once",
                Some(spec(&["a"])),
                true,
                vec![obs("x", "a", 0, EXITED)],
                None,
                vec![rm("x", 0), start("a", 1)],
                None,
            ),
            (
                "exit within back-off: wait",
                Some(spec(&["a"])),
                true,
                vec![obs("x", "a", 1, EXITED)],
                Some(recent),
                vec![],
                Some(NOW + 8_000),
            ),
            (
                "exit after back-off: restart",
                Some(spec(&["a"])),
                true,
                vec![obs("x", "a", 1, EXITED)],
                Some(old),
                vec![rm("x", 0), start("a", 2)],
                None,
            ),
            (
                "back-off forgotten after 10 min",
                Some(spec(&["a"])),
                true,
                vec![obs("x", "a", 7, EXITED)],
                Some(stale),
                vec![rm("x", 0), start("a", 8)],
                None,
            ),
            (
                "created without task: recreate same count",
                Some(spec(&["a"])),
                true,
                vec![obs("x", "a", 3, State::Created)],
                None,
                vec![rm("x", 0), start("a", 3)],
                None,
            ),
            (
                "created moments ago: may be starting, look again later",
                Some(spec(&["a"])),
                true,
                vec![Observed {
                    created_ms: NOW - 1000,
                    ..obs("x", "a", 0, State::Created)
                }],
                None,
                vec![],
                Some(NOW - 1000 + CREATED_GRACE_MS),
            ),
            (
                "start failed before: wait",
                Some(spec(&["a"])),
                true,
                vec![],
                Some(recent),
                vec![],
                Some(NOW + 8_000),
            ),
            (
                "held for old revision: no start",
                Some(spec(&["a"])),
                false,
                vec![],
                None,
                vec![],
                None,
            ),
            (
                "unknown container: removed with grace",
                Some(spec(&["a"])),
                true,
                vec![
                    obs("x", "a", 0, State::Running),
                    obs("z", "zz", 0, State::Running),
                ],
                None,
                vec![rm("z", 5)],
                None,
            ),
            (
                "pod gone: stop all, remove sandbox",
                None,
                true,
                vec![obs("x", "a", 0, State::Running), obs("y", "b", 0, EXITED)],
                None,
                vec![rm("x", 30), rm("y", 0), Action::RemoveSandbox],
                None,
            ),
            (
                "waiting keeps newest dead only",
                Some(spec(&["a"])),
                true,
                vec![obs("x", "a", 1, EXITED), obs("w", "a", 0, EXITED)],
                Some(recent),
                vec![rm("w", 0)],
                Some(NOW + 8_000),
            ),
        ];
        for (what, spec, may_start, observed, b, want, requeue) in cases {
            let mut backoff = BTreeMap::new();
            if let Some(b) = b {
                backoff.insert("a".to_string(), b);
            }
            let plan = plan_pod(spec.as_ref(), may_start, &observed, &backoff, NOW);
            assert_eq!(plan.actions, want, "{what}");
            assert_eq!(plan.requeue_at(), requeue, "{what}");
        }
    }

    #[test]
    fn backoff_doubles_to_cap_and_resets() {
        let mut b = after_restart(None, 0);
        assert_eq!(b.delay_ms, 10_000);
        let mut delays = vec![];
        for i in 1..8 {
            b = after_restart(Some(&b), i * 1000);
            delays.push(b.delay_ms / 1000);
        }
        assert_eq!(delays, vec![20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(restart_allowed_at(Some(&b), 7_500), 7_000 + 300_000);
        let later = 7_000 + BACKOFF_RESET_MS + 1;
        assert_eq!(restart_allowed_at(Some(&b), later), later);
        assert_eq!(after_restart(Some(&b), later).delay_ms, BACKOFF_INITIAL_MS);
    }

    #[test]
    fn recorded_backoff_table() {
        let at = |id: &str, name: &str, restarts: u32, created_s: i64, state: State| Observed {
            created_ms: created_s * 1000,
            ..obs(id, name, restarts, state)
        };
        let b = |start_s: i64, delay_s: i64| Backoff {
            last_start_ms: start_s * 1000 + 999,
            delay_ms: delay_s * 1000,
        };
        type Case = (&'static str, Vec<Observed>, Vec<(&'static str, Backoff)>);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("nothing there", vec![], vec![]),
            ("first incarnation running: never restarted", vec![at("x", "a", 0, 100, State::Running)], vec![]),
            ("first incarnation exited: restarts at once", vec![at("x", "a", 0, 100, EXITED)], vec![]),
            ("first restart: 10 s from its start", vec![at("x", "a", 1, 100, EXITED)], vec![("a", b(100, 10))]),
            ("third restart: 40 s", vec![at("x", "a", 3, 100, EXITED)], vec![("a", b(100, 40))]),
            ("running restarted one keeps its back-off for its next exit", vec![at("x", "a", 2, 100, State::Running)], vec![("a", b(100, 20))]),
            ("sixth restart: capped at 300 s", vec![at("x", "a", 6, 100, EXITED)], vec![("a", b(100, 300))]),
            ("a huge count stays at the cap", vec![at("x", "a", u32::MAX, 100, EXITED)], vec![("a", b(100, 300))]),
            ("the newest incarnation counts", vec![at("x", "a", 2, 100, EXITED), at("y", "a", 3, 130, State::Running)], vec![("a", b(130, 40))]),
            ("each container its own", vec![at("x", "a", 1, 100, EXITED), at("y", "b", 4, 90, EXITED), at("z", "c", 0, 80, EXITED)], vec![("a", b(100, 10)), ("b", b(90, 80))]),
        ];
        for (what, observed, want) in cases {
            let want: BTreeMap<String, Backoff> =
                want.into_iter().map(|(n, b)| (n.to_string(), b)).collect();
            assert_eq!(recorded_backoff(&observed), want, "{what}");
        }
    }

    /// A rebuilt back-off plans as the remembered one would: no restart before the delay from the
    /// start, the restart after it, and the next delay doubled from the rebuilt one.
    #[test]
    fn recorded_backoff_plans_like_the_remembered_one() {
        let started_s = NOW / 1000 - 5;
        let dead = Observed {
            created_ms: started_s * 1000,
            ..obs("x", "a", 2, EXITED)
        };
        let remembered = after_restart(
            Some(&after_restart(None, started_s * 1000 - 10_000)),
            started_s * 1000,
        );
        let rebuilt = recorded_backoff(std::slice::from_ref(&dead));
        assert_eq!(rebuilt["a"].delay_ms, remembered.delay_ms);
        assert!(
            restart_allowed_at(Some(&rebuilt["a"]), NOW)
                >= restart_allowed_at(Some(&remembered), NOW)
        );
        let plan = plan_pod(
            Some(&spec(&["a"])),
            true,
            std::slice::from_ref(&dead),
            &rebuilt,
            NOW,
        );
        assert_eq!(plan.actions, vec![], "5 s into a 20 s back-off");
        assert_eq!(plan.requeue_at(), Some(started_s * 1000 + 999 + 20_000));
        let later = started_s * 1000 + 999 + 20_000;
        let plan = plan_pod(Some(&spec(&["a"])), true, &[dead], &rebuilt, later);
        assert_eq!(plan.actions, vec![rm("x", 0), start("a", 3)]);
        assert_eq!(after_restart(Some(&rebuilt["a"]), later).delay_ms, 40_000);
    }

    #[test]
    fn pod_names_are_stable_and_valid() {
        let a = pod_name("node-monitor", "uid-1", "worker-1", "abc");
        assert_eq!(a, pod_name("node-monitor", "uid-1", "worker-1", "abc"));
        assert_ne!(a, pod_name("node-monitor", "uid-1", "edge-1", "abc"));
        assert_ne!(a, pod_name("node-monitor", "uid-1", "worker-1", "abd"));
        assert!(a.starts_with("node-monitor-") && a.len() == "node-monitor-".len() + 5);
        let long = pod_name(&"x".repeat(300), "u", "n", "h");
        assert_eq!(long.len(), 63);
        let uid = pod_uid("u", "n", "h");
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.matches('-').count(), 4);
    }

    #[test]
    fn old_revision_holds_new_pod() {
        let mk = |name: &str| DesiredPod {
            key: PodKey {
                namespace: "default".into(),
                name: name.into(),
            },
            uid: String::new(),
            owner: Owner {
                namespace: "default".into(),
                name: "ds".into(),
                uid: "ds-uid".into(),
            },
            template_hash: String::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            spec: PodSpec::default(),
            may_start: true,
        };
        let key = |n: &str| PodKey {
            namespace: "default".into(),
            name: n.into(),
        };
        let mut desired = vec![mk("ds-new")];
        let mut present = BTreeMap::new();
        present.insert(key("ds-old"), "ds-uid".to_string());
        hold_for_old_revisions(&mut desired, &present);
        assert!(!desired[0].may_start, "old revision present: wait");
        present.insert(key("ds-new"), "ds-uid".to_string());
        hold_for_old_revisions(&mut desired, &present);
        assert!(desired[0].may_start, "already started: keep going");
        present.clear();
        present.insert(key("other"), "other-uid".to_string());
        hold_for_old_revisions(&mut desired, &present);
        assert!(
            desired[0].may_start,
            "another DaemonSet's pod does not hold it"
        );
    }
}
