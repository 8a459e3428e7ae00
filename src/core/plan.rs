//! The reconcile plan of one pod: the pods this node runs are the API's Pods bound to it
//! ([`DesiredPod::from_api`]), and for one pod, what to do to its containers given what
//! containerd reports. Pure: the caller passes the time and owns every side effect.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec};

/// Label Kubernetes puts on daemon pods: the hash of the template they were made from.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// Kubelet's container restart back-off: 10 s doubling to 300 s, forgotten after 10 min.
pub const BACKOFF_INITIAL_MS: i64 = 10_000;
pub const BACKOFF_MAX_MS: i64 = 300_000;
pub const BACKOFF_RESET_MS: i64 = 600_000;
/// A container without a running task younger than this may still be starting (or containerd's
/// task list missed it for a moment): leave it alone until then.
pub const CREATED_GRACE_MS: i64 = 5_000;
/// The grace period of a pod that does not say (`terminationGracePeriodSeconds`' default).
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

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

/// The DaemonSet that controls a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The API is deleting a pod: `metadata.deletionTimestamp` and `deletionGracePeriodSeconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deletion {
    /// The deletion timestamp, unix ms (whole seconds, as the API writes it).
    pub at_ms: i64,
    pub grace_seconds: i64,
}

impl Deletion {
    /// The grace period its containers still have at `now_ms`, in whole seconds: until the end
    /// of the second the timestamp names (the API drops the fraction), never more than the
    /// deletion's grace period, 0 once it has passed.
    pub fn grace_left(&self, now_ms: i64) -> i64 {
        let left_ms = (self.at_ms + 1000 - now_ms).max(0);
        ((left_ms + 999) / 1000).min(self.grace_seconds.max(0))
    }
}

/// A pod bound to this node, as the agent runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPod {
    pub key: PodKey,
    /// `metadata.uid` in the API.
    pub api_uid: String,
    /// The uid the pod's containers and sandbox carry on this node: the API's, or, for a pod an
    /// agent before the pod pipeline started, the uid that agent gave it.
    pub uid: String,
    /// The DaemonSet that controls the pod, if one does.
    pub owner: Option<Owner>,
    /// Its `controller-revision-hash` label (empty when it has none).
    pub template_hash: String,
    pub spec: PodSpec,
    /// Set while the API deletes the pod: its containers stop, then the pod is deleted.
    pub deletion: Option<Deletion>,
    /// The pod's labels and annotations (fieldRef and downwardAPI `metadata.labels[...]`).
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The pod's conditions as the API has them. A worker that has not written the pod's status
    /// yet (the agent restarted) keeps their `lastTransitionTime` while their status is
    /// unchanged, as the kubelet's status manager starts from the API's status: a restarted
    /// agent must not make a pod that was ready all along look ready since now (the DaemonSet
    /// controller would count it unavailable for minReadySeconds and replace it at once).
    pub api_conditions: Vec<k8s_openapi::api::core::v1::PodCondition>,
    /// The pod's `status.startTime` in the API (unix ms), kept the same way.
    pub api_start_ms: Option<i64>,
}

impl DesiredPod {
    /// The pod an API Pod asks this node to run; None for a pod without name, uid or spec, and
    /// for one in a terminal phase (Succeeded, Failed), whose containers do not run again.
    pub fn from_api(pod: &Pod) -> Option<DesiredPod> {
        let meta = &pod.metadata;
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return None;
        }
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.kind == "DaemonSet")
            .map(|o| Owner {
                namespace: namespace.clone(),
                name: o.name.clone(),
                uid: o.uid.clone(),
            });
        let deletion = meta.deletion_timestamp.as_ref().map(|t| Deletion {
            at_ms: t.0.as_millisecond(),
            grace_seconds: meta
                .deletion_grace_period_seconds
                .unwrap_or(DEFAULT_GRACE_SECONDS),
        });
        let uid = meta.uid.clone()?;
        Some(DesiredPod {
            key: PodKey {
                namespace,
                name: meta.name.clone()?,
            },
            api_uid: uid.clone(),
            uid,
            owner,
            template_hash: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_HASH_LABEL))
                .cloned()
                .unwrap_or_default(),
            spec: pod.spec.clone()?,
            deletion,
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            api_conditions: pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default(),
            api_start_ms: pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.as_millisecond()),
        })
    }

    /// What the pod's containers should do now.
    pub fn want(&self, now_ms: i64) -> Want<'_> {
        match &self.deletion {
            None => Want::Run(&self.spec),
            Some(d) => Want::Stop {
                grace_seconds: d.grace_left(now_ms),
            },
        }
    }

    /// The pod's grace period (`terminationGracePeriodSeconds`, 30 s by default).
    pub fn grace_seconds(&self) -> i64 {
        grace_of(&self.spec)
    }
}

/// A pod spec's grace period (`terminationGracePeriodSeconds`, 30 s by default).
pub fn grace_of(spec: &PodSpec) -> i64 {
    spec.termination_grace_period_seconds
        .unwrap_or(DEFAULT_GRACE_SECONDS)
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
        api_uid: format!("uid-{name}"),
        uid: format!("uid-{name}"),
        owner: Some(Owner {
            namespace: "default".into(),
            name: "ds".into(),
            uid: "uid-ds".into(),
        }),
        template_hash: "h".into(),
        spec: PodSpec {
            containers: vec![container],
            ..Default::default()
        },
        deletion: None,
        labels: Default::default(),
        annotations: Default::default(),
        api_conditions: Vec::new(),
        api_start_ms: None,
    }
}

/// Actions as the plan tests write them.
#[cfg(test)]
pub mod test_actions {
    use super::Action;

    pub fn start(name: &str, n: u32) -> Action {
        Action::Start {
            name: name.into(),
            restart_count: n,
        }
    }

    pub fn rm(id: &str, grace: i64) -> Action {
        Action::Remove {
            id: id.into(),
            grace_seconds: grace,
        }
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

/// How far the wall clock may read before a last start without being taken as stepped back: a
/// start rebuilt from containerd's record is the end of its whole second ([`recorded_backoff`]),
/// up to a second after the real one, and an agent restarted within that second must still wait
/// out the delay (`tests/e2e_kubectl.rs` restarted_agent_adopts_running_containers).
const CLOCK_SLACK_MS: i64 = 2_000;

/// When the container may be started again: one delay after its last start. A wall clock
/// stepped back to before the last start cannot tell how long ago that was: now, as after the
/// reset (a deadline kept at `last start + delay` would hold the container for as long as the
/// step, an hour for an hour; one at `now + delay` would move away at every look).
pub fn restart_allowed_at(b: Option<&Backoff>, now_ms: i64) -> i64 {
    match b {
        Some(b) if now_ms < b.last_start_ms - CLOCK_SLACK_MS => now_ms,
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
    /// Removals to make once every removal of `actions` is done: a going pod's sidecars, which
    /// stop after its app containers.
    pub then: Vec<Action>,
}

impl PodPlan {
    /// The earliest back-off deadline: when to look at this pod again.
    pub fn requeue_at(&self) -> Option<i64> {
        self.waiting.values().min().copied()
    }
}

/// What a pod's containers should do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Want<'a> {
    /// Run the containers of this spec (restarted with back-off; others removed).
    Run(&'a PodSpec),
    /// Stop every container (a running one with this grace period) and remove the sandbox: the
    /// pod is deleted, or no longer bound here.
    Stop { grace_seconds: i64 },
}

/// What to do to one pod's containers; `backoff` holds the back-off of the containers that were
/// restarted (or failed to start).
pub fn plan_pod(
    want: Want<'_>,
    observed: &[Observed],
    backoff: &BTreeMap<String, Backoff>,
    now_ms: i64,
) -> PodPlan {
    let mut plan = PodPlan::default();
    let spec = match want {
        Want::Run(spec) => spec,
        Want::Stop { grace_seconds } => {
            plan.actions
                .extend(observed.iter().map(|o| remove(o, grace_seconds)));
            plan.actions.push(Action::RemoveSandbox);
            return plan;
        }
    };
    let grace = grace_of(spec);
    let wanted: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    for o in observed {
        if !wanted.contains(&o.name.as_str()) {
            plan.actions.push(remove(o, grace));
        }
    }
    for name in wanted {
        plan_container(name, observed, backoff, grace, now_ms, &mut plan);
    }
    plan
}

/// Container `name` of a running pod into `plan`: its newest incarnation kept running (the older
/// ones removed), or started again once its back-off allows (a young `Created` one is left to
/// start); the shared step of app containers, sidecars and failed init containers.
pub fn plan_container(
    name: &str,
    observed: &[Observed],
    backoff: &BTreeMap<String, Backoff>,
    grace: i64,
    now_ms: i64,
    plan: &mut PodPlan,
) {
    let mut mine: Vec<&Observed> = observed.iter().filter(|o| o.name == name).collect();
    // newest incarnation first
    mine.sort_by_key(|o| std::cmp::Reverse((o.restart_count, o.created_ms)));
    if let Some(pos) = mine.iter().position(|o| o.state == State::Running) {
        for (i, o) in mine.iter().enumerate() {
            if i != pos {
                plan.actions.push(remove(o, grace));
            }
        }
        return;
    }
    if let Some(young) = mine
        .first()
        .filter(|o| o.state == State::Created && now_ms - o.created_ms < CREATED_GRACE_MS)
    {
        plan.waiting
            .insert(name.to_string(), young.created_ms + CREATED_GRACE_MS);
        return;
    }
    let next_count = mine.first().map(|o| match o.state {
        State::Created => o.restart_count,
        _ => o.restart_count + 1,
    });
    let at = restart_allowed_at(backoff.get(name), now_ms);
    if at > now_ms {
        plan.waiting.insert(name.to_string(), at);
        // keep the newest dead container for status until the restart; drop the others
        for o in mine.iter().skip(1) {
            plan.actions.push(remove(o, grace));
        }
        return;
    }
    for o in &mine {
        plan.actions.push(remove(o, grace));
    }
    plan.actions.push(Action::Start {
        name: name.to_string(),
        restart_count: next_count.unwrap_or(0),
    });
}

/// Removing `o`: with the grace period when it runs, at once otherwise.
pub fn remove(o: &Observed, grace: i64) -> Action {
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

    use super::test_actions::{rm, start};

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
        type Case = (&'static str, Result<PodSpec, i64>, Vec<Observed>, Option<Backoff>, Vec<Action>, Option<i64>);
        let cases: Vec<Case> = vec![
            (
                "nothing there: start",
                Ok(spec(&["a"])),
                vec![],
                None,
                vec![start("a", 0)],
                None,
            ),
            (
                "two containers: start both",
                Ok(spec(&["a", "b"])),
                vec![],
                None,
                vec![start("a", 0), start("b", 0)],
                None,
            ),
            (
                "running: nothing to do",
                Ok(spec(&["a"])),
                vec![obs("x", "a", 0, State::Running)],
                None,
                vec![],
                None,
            ),
            (
                "duplicate running: keep newest",
                Ok(spec(&["a"])),
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
                Ok(spec(&["a"])),
                vec![obs("x", "a", 0, EXITED)],
                None,
                vec![rm("x", 0), start("a", 1)],
                None,
            ),
            (
                "exit within back-off: wait",
                Ok(spec(&["a"])),
                vec![obs("x", "a", 1, EXITED)],
                Some(recent),
                vec![],
                Some(NOW + 8_000),
            ),
            (
                "exit after back-off: restart",
                Ok(spec(&["a"])),
                vec![obs("x", "a", 1, EXITED)],
                Some(old),
                vec![rm("x", 0), start("a", 2)],
                None,
            ),
            (
                "back-off forgotten after 10 min",
                Ok(spec(&["a"])),
                vec![obs("x", "a", 7, EXITED)],
                Some(stale),
                vec![rm("x", 0), start("a", 8)],
                None,
            ),
            (
                "created without task: recreate same count",
                Ok(spec(&["a"])),
                vec![obs("x", "a", 3, State::Created)],
                None,
                vec![rm("x", 0), start("a", 3)],
                None,
            ),
            (
                "created moments ago: may be starting, look again later",
                Ok(spec(&["a"])),
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
                Ok(spec(&["a"])),
                vec![],
                Some(recent),
                vec![],
                Some(NOW + 8_000),
            ),
            (
                "unknown container: removed with grace",
                Ok(spec(&["a"])),
                vec![
                    obs("x", "a", 0, State::Running),
                    obs("z", "zz", 0, State::Running),
                ],
                None,
                vec![rm("z", 5)],
                None,
            ),
            (
                "pod gone: stop all with its grace, remove sandbox",
                Err(30),
                vec![obs("x", "a", 0, State::Running), obs("y", "b", 0, EXITED)],
                None,
                vec![rm("x", 30), rm("y", 0), Action::RemoveSandbox],
                None,
            ),
            (
                "waiting keeps newest dead only",
                Ok(spec(&["a"])),
                vec![obs("x", "a", 1, EXITED), obs("w", "a", 0, EXITED)],
                Some(recent),
                vec![rm("w", 0)],
                Some(NOW + 8_000),
            ),
        ];
        for (what, spec, observed, b, want, requeue) in cases {
            let mut backoff = BTreeMap::new();
            if let Some(b) = b {
                backoff.insert("a".to_string(), b);
            }
            let w = match &spec {
                Ok(spec) => Want::Run(spec),
                Err(grace_seconds) => Want::Stop {
                    grace_seconds: *grace_seconds,
                },
            };
            let plan = plan_pod(w, &observed, &backoff, NOW);
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

    /// A wall clock stepped back an hour after a start: restarted now, not in an hour and a
    /// delay; stepped forward past the reset: restarted now, the delay reset.
    #[test]
    fn backoff_survives_clock_steps() {
        const HOUR: i64 = 3_600_000;
        let b = after_restart(Some(&after_restart(None, 0)), 1_000);
        assert_eq!(b.delay_ms, 20_000);
        for (now, want) in [
            (5_000, 21_000),
            (1_000 - HOUR, 1_000 - HOUR),
            // within the record's precision of the start: not a step, the delay holds
            (999, 21_000),
            (1_000 - CLOCK_SLACK_MS, 21_000),
            (999 - CLOCK_SLACK_MS, 999 - CLOCK_SLACK_MS),
            (1_000 + HOUR, 1_000 + HOUR),
        ] {
            let at = restart_allowed_at(Some(&b), now);
            assert_eq!(at, want, "now {now}");
            assert!(at - now <= BACKOFF_MAX_MS, "now {now}");
        }
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
            Want::Run(&spec(&["a"])),
            std::slice::from_ref(&dead),
            &rebuilt,
            NOW,
        );
        assert_eq!(plan.actions, vec![], "5 s into a 20 s back-off");
        assert_eq!(plan.requeue_at(), Some(started_s * 1000 + 999 + 20_000));
        let later = started_s * 1000 + 999 + 20_000;
        let plan = plan_pod(Want::Run(&spec(&["a"])), &[dead], &rebuilt, later);
        assert_eq!(plan.actions, vec![rm("x", 0), start("a", 3)]);
        assert_eq!(after_restart(Some(&rebuilt["a"]), later).delay_ms, 40_000);
    }

    #[test]
    fn api_pods_become_desired_pods() {
        let pod = |extra: serde_json::Value| -> Pod {
            let mut p = serde_json::json!({
                "metadata": {"name": "mon-x7k2p", "namespace": "kube-system", "uid": "u-1",
                    "labels": {"app": "mon", "controller-revision-hash": "h1"},
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "cm"},
                        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "mon", "uid": "ds-1", "controller": true}]},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": "Running"}});
            if let Some(o) = extra.as_object() {
                for (k, v) in o {
                    let (section, field) = k.split_once('.').unwrap();
                    p[section][field] = v.clone();
                }
            }
            serde_json::from_value(p).unwrap()
        };
        let d = DesiredPod::from_api(&pod(serde_json::json!({}))).unwrap();
        assert_eq!(d.key.to_string(), "kube-system/mon-x7k2p");
        assert_eq!((d.api_uid.as_str(), d.uid.as_str()), ("u-1", "u-1"));
        assert_eq!(
            d.owner.as_ref().map(|o| (o.name.as_str(), o.uid.as_str())),
            Some(("mon", "ds-1"))
        );
        assert_eq!(d.template_hash, "h1");
        assert_eq!(d.deletion, None);
        assert_eq!(d.want(0), Want::Run(&d.spec));
        assert_eq!(d.grace_seconds(), DEFAULT_GRACE_SECONDS);
        for phase in ["Succeeded", "Failed"] {
            let p = pod(serde_json::json!({"status.phase": phase}));
            assert_eq!(DesiredPod::from_api(&p), None, "{phase}");
        }
        let bare =
            pod(serde_json::json!({"metadata.ownerReferences": null, "metadata.labels": null}));
        let d = DesiredPod::from_api(&bare).unwrap();
        assert_eq!((d.owner, d.template_hash.as_str()), (None, ""));
        let going = pod(
            serde_json::json!({"metadata.deletionTimestamp": "2026-11-24T12:00:10Z",
            "metadata.deletionGracePeriodSeconds": 10}),
        );
        let d = DesiredPod::from_api(&going).unwrap();
        let at = d.deletion.unwrap().at_ms;
        assert_eq!(d.deletion.unwrap().grace_seconds, 10);
        // seen 0.3 s after the delete (made at 12:00:00.7): the whole 10 s
        assert_eq!(d.want(at - 9_300), Want::Stop { grace_seconds: 10 });
        assert_eq!(d.want(at + 200), Want::Stop { grace_seconds: 1 });
        assert_eq!(d.want(at + 1_000), Want::Stop { grace_seconds: 0 });
        assert_eq!(d.want(at + 60_000), Want::Stop { grace_seconds: 0 });
    }
}
