//! What to do next in a pod that has init containers, as the kubelet's `computePodActions` decides
//! it: the init containers run one after the other, each to completion (exit 0) before the next
//! and before any app container, a failed one restarted with the pod's back-off (restartPolicy
//! Always); a restartable init container (a sidecar, `restartPolicy: Always`) is started in its
//! turn, the next one waits until it is started (running, its startup probe passed), and it is
//! kept running beside the app containers; a going pod stops its app containers first and its
//! sidecars after them. Pure: the caller passes the time and which sidecars are started.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::core::plan::{self, Action, Backoff, Observed, PodPlan, State, Want};

/// The shortest grace period a container's SIGTERM gets after its preStop hook
/// (`minimumGracePeriodInSeconds` in the kubelet: no container is killed without a chance).
pub const MIN_GRACE_AFTER_PRE_STOP: i64 = 2;

/// The grace period left for the SIGTERM once a preStop hook took `spent_seconds` (whole seconds,
/// as the kubelet counts them) of `grace_seconds`: the rest, and never less than the minimum. The
/// same for a going pod's sidecars, after its app containers took their time.
pub fn grace_after_pre_stop(grace_seconds: i64, spent_seconds: i64) -> i64 {
    (grace_seconds - spent_seconds.max(0)).max(MIN_GRACE_AFTER_PRE_STOP)
}

/// A restartable init container: a sidecar (KEP-753).
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The container of `spec` named `name`, app or init container (names are unique across both).
pub fn container<'a>(spec: &'a PodSpec, name: &str) -> Option<&'a Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// Whether init container `c` has done its part: a regular one exited 0, a sidecar is running
/// and started.
fn complete(
    c: &Container,
    newest: &BTreeMap<String, &Observed>,
    started: &BTreeSet<String>,
) -> bool {
    let o = newest.get(&c.name);
    if is_sidecar(c) {
        o.is_some_and(|o| o.state == State::Running) && started.contains(&c.name)
    } else {
        o.is_some_and(|o| matches!(o.state, State::Exited { code: 0, .. }))
    }
}

/// The init containers that have not done their part yet, in order (none once the pod was
/// initialized: an app container of it ran in this sandbox, so its init containers ran, as the
/// kubelet reasons when their records are gone). Containers without a task (`Created`: after a
/// reboot every container is, its sandbox new) prove nothing: a new sandbox runs them again.
pub fn incomplete<'a>(
    spec: &'a PodSpec,
    newest: &BTreeMap<String, &Observed>,
    started: &BTreeSet<String>,
) -> Vec<&'a str> {
    let ran = |c: &Container| {
        newest
            .get(&c.name)
            .is_some_and(|o| o.state != State::Created)
    };
    if spec.containers.iter().any(ran) {
        return Vec::new();
    }
    spec.init_containers
        .iter()
        .flatten()
        .filter(|c| !complete(c, newest, started))
        .map(|c| c.name.as_str())
        .collect()
}

/// What to do to one pod's containers, init containers included. `known` is the pod's spec when
/// `want` is to stop (which containers are sidecars, to stop them last); `started` names the
/// sidecars whose running incarnation is started; `backoff` holds the back-off of containers that
/// were restarted or failed to start.
pub fn plan_pod(
    want: Want<'_>,
    known: Option<&PodSpec>,
    observed: &[Observed],
    backoff: &BTreeMap<String, Backoff>,
    started: &BTreeSet<String>,
    now_ms: i64,
) -> PodPlan {
    let spec = match want {
        Want::Run(spec) => spec,
        Want::Stop { grace_seconds } => {
            let mut plan = PodPlan::default();
            let sidecar = |name: &str| {
                known
                    .and_then(|s| container(s, name))
                    .is_some_and(is_sidecar)
            };
            for o in observed {
                let a = plan::remove(o, grace_seconds);
                if sidecar(&o.name) {
                    plan.then.push(a);
                } else {
                    plan.actions.push(a);
                }
            }
            plan.actions.push(Action::RemoveSandbox);
            return plan;
        }
    };
    let mut plan = PodPlan::default();
    let grace = plan::grace_of(spec);
    let init = spec.init_containers.as_deref().unwrap_or(&[]);
    for o in observed {
        if container(spec, &o.name).is_none() {
            plan.actions.push(plan::remove(o, grace));
        }
    }
    let newest = plan::newest(observed);
    if incomplete(spec, &newest, started).is_empty() {
        // initialized: the sidecars kept running beside the app containers; the regular init
        // containers' records stay as the proof that they ran
        let running = init
            .iter()
            .filter(|c| is_sidecar(c))
            .chain(&spec.containers);
        for c in running {
            plan::plan_container(&c.name, observed, backoff, grace, now_ms, &mut plan);
        }
        return plan;
    }
    for c in init {
        let done = complete(c, &newest, started);
        // a sidecar started earlier is kept running (restarted when it dies) while the later
        // init containers run; the first init container not done is started (or waited for)
        if is_sidecar(c) || !done {
            plan::plan_container(&c.name, observed, backoff, grace, now_ms, &mut plan);
        }
        if !done {
            break;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000_000;

    fn c(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("busybox".into()),
            ..Default::default()
        }
    }

    fn sidecar(name: &str) -> Container {
        Container {
            restart_policy: Some("Always".into()),
            ..c(name)
        }
    }

    fn spec(init: Vec<Container>, apps: &[&str]) -> PodSpec {
        PodSpec {
            init_containers: Some(init),
            containers: apps.iter().map(|n| c(n)).collect(),
            termination_grace_period_seconds: Some(5),
            ..Default::default()
        }
    }

    fn obs(name: &str, restarts: u32, state: State) -> Observed {
        Observed {
            id: format!("{name}{restarts}"),
            name: name.into(),
            restart_count: restarts,
            state,
            created_ms: NOW - 60_000 + i64::from(restarts),
        }
    }

    fn exited(code: u32) -> State {
        State::Exited {
            code,
            at_ms: Some(NOW - 1000),
        }
    }

    use crate::core::plan::test_actions::{rm, start};

    #[test]
    fn what_to_start_next() {
        let two = spec(vec![c("i1"), c("i2")], &["app"]);
        let with_sidecar = spec(vec![c("i1"), sidecar("side"), c("i2")], &["app"]);
        let recent = Backoff {
            last_start_ms: NOW - 2_000,
            delay_ms: 10_000,
        };
        type Case = (
            &'static str,
            &'static PodSpec,
            Vec<Observed>,
            &'static [&'static str],
            Option<(&'static str, Backoff)>,
            Vec<Action>,
            Vec<&'static str>,
        );
        let two: &'static PodSpec = Box::leak(Box::new(two));
        let with_sidecar: &'static PodSpec = Box::leak(Box::new(with_sidecar));
        let run = State::Running;
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("nothing there: the first init container only", two, vec![], &[], None,
                vec![start("i1", 0)], vec!["i1", "i2"]),
            ("first running: wait for it", two, vec![obs("i1", 0, run)], &[], None,
                vec![], vec!["i1", "i2"]),
            ("first done: the second", two, vec![obs("i1", 0, exited(0))], &[], None,
                vec![start("i2", 0)], vec!["i2"]),
            ("first failed: restarted at once the first time", two, vec![obs("i1", 0, exited(1))], &[], None,
                vec![rm("i10", 0), start("i1", 1)], vec!["i1", "i2"]),
            ("first failed again within its back-off: wait, nothing else starts", two, vec![obs("i1", 1, exited(1))], &[], Some(("i1", recent)),
                vec![], vec!["i1", "i2"]),
            ("both done: the app, the records kept", two, vec![obs("i1", 0, exited(0)), obs("i2", 2, exited(0))], &[], None,
                vec![start("app", 0)], vec![]),
            ("app exists (adopted, records gone): init containers not run again", two, vec![obs("app", 0, run)], &[], None,
                vec![], vec![]),
            ("app died after init: restarted, init not re-run", two, vec![obs("i1", 0, exited(0)), obs("i2", 0, exited(0)), obs("app", 0, exited(2))], &[], None,
                vec![rm("app0", 0), start("app", 1)], vec![]),
            ("sidecar's turn: started", with_sidecar, vec![obs("i1", 0, exited(0))], &[], None,
                vec![start("side", 0)], vec!["side", "i2"]),
            ("sidecar running, not started (startup probe): the next waits", with_sidecar, vec![obs("i1", 0, exited(0)), obs("side", 0, run)], &[], None,
                vec![], vec!["side", "i2"]),
            ("sidecar started: the next init container", with_sidecar, vec![obs("i1", 0, exited(0)), obs("side", 0, run)], &["side"], None,
                vec![start("i2", 0)], vec!["i2"]),
            ("sidecar died while i2 runs: restarted, i2 left running", with_sidecar, vec![obs("i1", 0, exited(0)), obs("side", 0, exited(137)), obs("i2", 0, run)], &[], None,
                vec![rm("side0", 0), start("side", 1), ], vec!["side", "i2"]),
            ("initialized: sidecar and app run together", with_sidecar, vec![obs("i1", 0, exited(0)), obs("side", 0, run), obs("i2", 0, exited(0))], &["side"], None,
                vec![start("app", 0)], vec![]),
            ("sidecar dies beside the app: restarted with back-off", with_sidecar, vec![obs("i1", 0, exited(0)), obs("side", 1, exited(1)), obs("i2", 0, exited(0)), obs("app", 0, run)], &[], Some(("side", recent)),
                vec![], vec![]),
            ("a new sandbox (no task survived a reboot): the init containers run again", two, vec![obs("i1", 0, State::Created), obs("i2", 0, State::Created), obs("app", 0, State::Created)], &[], None,
                vec![rm("i10", 0), start("i1", 0)], vec!["i1", "i2"]),
            ("a container of no name the spec knows goes", two, vec![obs("old", 0, run)], &[], None,
                vec![rm("old0", 5), start("i1", 0)], vec!["i1", "i2"]),
        ];
        for (what, spec, observed, started, b, want, incomplete_want) in cases {
            let backoff: BTreeMap<String, Backoff> =
                b.into_iter().map(|(n, b)| (n.to_string(), b)).collect();
            let started: BTreeSet<String> = started.iter().map(|s| s.to_string()).collect();
            let plan = plan_pod(Want::Run(spec), None, &observed, &backoff, &started, NOW);
            assert_eq!(plan.actions, want, "{what}");
            let newest = plan::newest(&observed);
            assert_eq!(
                incomplete(spec, &newest, &started),
                incomplete_want,
                "{what}"
            );
        }
    }

    #[test]
    fn waits_are_reported_for_requeue() {
        let two = spec(vec![c("i1"), c("i2")], &["app"]);
        let b = Backoff {
            last_start_ms: NOW - 2_000,
            delay_ms: 20_000,
        };
        let backoff = BTreeMap::from([("i1".to_string(), b)]);
        let plan = plan_pod(
            Want::Run(&two),
            None,
            &[obs("i1", 2, exited(1))],
            &backoff,
            &BTreeSet::new(),
            NOW,
        );
        assert_eq!(plan.requeue_at(), Some(NOW + 18_000));
    }

    #[test]
    fn a_going_pod_stops_its_sidecars_after_its_app_containers() {
        let s = spec(vec![c("i1"), sidecar("side")], &["app"]);
        let observed = [
            obs("i1", 0, exited(0)),
            obs("side", 0, State::Running),
            obs("app", 0, State::Running),
        ];
        let plan = plan_pod(
            Want::Stop { grace_seconds: 7 },
            Some(&s),
            &observed,
            &BTreeMap::new(),
            &BTreeSet::new(),
            NOW,
        );
        assert_eq!(
            plan.actions,
            vec![rm("i10", 0), rm("app0", 7), Action::RemoveSandbox]
        );
        assert_eq!(plan.then, vec![rm("side0", 7)]);
        // without the spec (a pod gone before this agent saw it) everything stops at once
        let plan = plan_pod(
            Want::Stop { grace_seconds: 7 },
            None,
            &observed,
            &BTreeMap::new(),
            &BTreeSet::new(),
            NOW,
        );
        assert!(plan.then.is_empty());
    }

    #[test]
    fn pre_stop_takes_its_time_out_of_the_grace_period() {
        // (grace, spent in the hook, left for the SIGTERM)
        for (grace, spent, left) in [
            (30, 0, 30),
            (30, 12, 18),
            (10, 9, 2),
            (10, 10, 2),
            (3, 60, 2),
            (1, 0, 2),
        ] {
            assert_eq!(grace_after_pre_stop(grace, spent), left, "{grace} {spent}");
        }
    }

    #[test]
    fn pods_without_init_containers_plan_as_before() {
        let s = spec(vec![], &["a", "b"]);
        let observed = [obs("a", 0, State::Running), obs("b", 0, exited(1))];
        let backoff = BTreeMap::new();
        let want = plan::plan_pod(Want::Run(&s), &observed, &backoff, NOW);
        let got = plan_pod(
            Want::Run(&s),
            None,
            &observed,
            &backoff,
            &BTreeSet::new(),
            NOW,
        );
        assert_eq!(got, want);
    }
}
