//! A pod's v1 status, computed from what containerd reports for its containers. Pure: the time and
//! the previous status are passed in (condition transition times stay put while nothing changes).
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::core::plan::{Observed, State};
use crate::core::podactions::{self, is_sidecar};
use crate::core::probe::Gates;

/// Why a container is not running, as the kubelet says it (`ContainerCreating`, `ErrImagePull`,
/// `ImagePullBackOff`, `CrashLoopBackOff`, `CreateContainerError`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

/// The last termination of a container, kept across its restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    pub exit_code: i32,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// What it left at its terminationMessagePath (or its log's end, FallbackToLogsOnError).
    pub message: Option<String>,
}

/// Everything the status is computed from.
pub struct PodView<'a> {
    pub spec: &'a PodSpec,
    /// The newest incarnation of each container, by container name.
    pub containers: BTreeMap<String, &'a Observed>,
    /// Images by container name: (reference, digest) once resolved.
    pub images: BTreeMap<String, (String, String)>,
    pub waiting: BTreeMap<String, Waiting>,
    pub last_termination: BTreeMap<String, Termination>,
    /// The termination before the last, by container name: the last state of a container whose
    /// last termination is its current state (a completed init container that had failed).
    pub previous_termination: BTreeMap<String, Termination>,
    pub host_ip: Option<String>,
    /// The pod's IPs from its network (IPv4 first); the node's are used with hostNetwork.
    pub pod_ips: Vec<String>,
    pub start_ms: i64,
    /// What the probes say of running containers, by name; a running container without an
    /// entry is started and ready (it has no probes).
    pub gates: BTreeMap<String, Gates>,
}

pub fn time(ms: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap_or_default())
}

fn terminated(t: &Termination) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        reason: Some(
            if t.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .into(),
        ),
        started_at: Some(time(t.started_ms)),
        finished_at: t.finished_ms.map(time),
        message: t.message.clone(),
        ..Default::default()
    }
}

/// The status of container `c` as `view` sees it, and its gates (started, ready). A container
/// nothing is known of waits with `default_reason` (`ContainerCreating`, or `PodInitializing` in
/// a pod with init containers, as the kubelet's defaults).
fn container_status(
    view: &PodView,
    c: &k8s_openapi::api::core::v1::Container,
    default_reason: &str,
    init: bool,
) -> (ContainerStatus, Gates) {
    let obs = view.containers.get(&c.name).copied();
    let (image, image_id) = view
        .images
        .get(&c.name)
        .cloned()
        .unwrap_or_else(|| (c.image.clone().unwrap_or_default(), String::new()));
    let state = match (obs.map(|o| o.state), view.waiting.get(&c.name)) {
        (Some(State::Running), _) => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: obs.map(|o| time(o.created_ms)),
            }),
            ..Default::default()
        },
        (_, Some(w)) => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(w.reason.clone()),
                message: (!w.message.is_empty()).then(|| w.message.clone()),
            }),
            ..Default::default()
        },
        (Some(State::Exited { code, at_ms }), None) => ContainerState {
            terminated: obs.map(|o| {
                // the message recorded of this very incarnation
                let message = view
                    .last_termination
                    .get(&c.name)
                    .filter(|t| t.started_ms == o.created_ms)
                    .and_then(|t| t.message.clone());
                terminated(&Termination {
                    exit_code: code as i32,
                    started_ms: o.created_ms,
                    finished_ms: at_ms,
                    message,
                })
            }),
            ..Default::default()
        },
        _ => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(default_reason.into()),
                message: None,
            }),
            ..Default::default()
        },
    };
    let running = state.running.is_some();
    let mut gates = match view.gates.get(&c.name) {
        Some(g) if running => *g,
        _ => Gates {
            started: running,
            ready: running,
        },
    };
    // a regular init container that completed is ready, as the kubelet reports it
    if init && !is_sidecar(c) {
        let completed = state.terminated.as_ref().is_some_and(|t| t.exit_code == 0);
        gates = Gates {
            started: running,
            ready: completed,
        };
    }
    let restart_count = obs.map(|o| o.restart_count).unwrap_or(0);
    // the termination before this one when the container's state is its last termination
    let last = match (&state.terminated, view.last_termination.get(&c.name)) {
        (Some(_), Some(t)) if obs.is_some_and(|o| o.created_ms == t.started_ms) => {
            view.previous_termination.get(&c.name)
        }
        (_, t) => t,
    };
    let status = ContainerStatus {
        name: c.name.clone(),
        image,
        image_id,
        container_id: obs.map(|o| format!("containerd://{}", o.id)),
        ready: gates.ready,
        started: Some(gates.started),
        restart_count: restart_count as i32,
        state: Some(state),
        last_state: last.map(|t| ContainerState {
            terminated: Some(terminated(t)),
            ..Default::default()
        }),
        ..Default::default()
    };
    (status, gates)
}

/// The sidecars whose running incarnation is started (by its startup probe, if it has one).
pub fn started_sidecars(view: &PodView) -> BTreeSet<String> {
    view.spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c))
        .filter(|c| {
            view.containers
                .get(&c.name)
                .is_some_and(|o| o.state == State::Running)
                && view.gates.get(&c.name).is_none_or(|g| g.started)
        })
        .map(|c| c.name.clone())
        .collect()
}

pub fn pod_status(view: &PodView, prev: Option<&PodStatus>, now_ms: i64) -> PodStatus {
    let init = view.spec.init_containers.as_deref().unwrap_or(&[]);
    let default_reason = if init.is_empty() {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let incomplete = podactions::incomplete(view.spec, &view.containers, &started_sidecars(view));
    let initialized = incomplete.is_empty();
    let mut all_ready = !view.spec.containers.is_empty();
    let mut unready = Vec::new();
    let mut init_statuses = Vec::new();
    for c in init {
        let (st, gates) = container_status(view, c, default_reason, true);
        // sidecars count in the pod's readiness, as app containers do
        if is_sidecar(c) {
            all_ready &= gates.ready;
            if !gates.ready {
                unready.push(c.name.as_str());
            }
        }
        init_statuses.push(st);
    }
    let mut statuses = Vec::new();
    let mut any_started = false;
    for c in &view.spec.containers {
        let (st, gates) = container_status(view, c, default_reason, false);
        all_ready &= gates.ready;
        if !gates.ready {
            unready.push(c.name.as_str());
        }
        let running = st.state.as_ref().is_some_and(|s| s.running.is_some());
        any_started |= running || st.restart_count > 0;
        statuses.push(st);
    }
    let cond = |type_: &str, ok: bool| {
        let status = if ok { "True" } else { "False" };
        let since = prev
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| time(now_ms));
        let (reason, message) = match type_ {
            _ if ok => (None, None),
            "Initialized" => (
                Some("ContainersNotInitialized".to_string()),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                )),
            ),
            t if t.ends_with("Ready") => (
                Some("ContainersNotReady".to_string()),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            ),
            _ => (None, None),
        };
        PodCondition {
            type_: type_.into(),
            status: status.into(),
            last_transition_time: Some(since),
            reason,
            message,
            ..Default::default()
        }
    };
    let host_network = view.spec.host_network.unwrap_or(false);
    let pod_ips: Vec<String> = if host_network {
        view.host_ip.clone().into_iter().collect()
    } else {
        view.pod_ips.clone()
    };
    let pod_ip = pod_ips.first().cloned();
    // a pod still initializing is Pending, as the kubelet's getPhase has it
    let phase = if initialized && any_started {
        "Running"
    } else {
        "Pending"
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![
            cond("PodReadyToStartContainers", true),
            cond("Initialized", initialized),
            cond("Ready", all_ready),
            cond("ContainersReady", all_ready),
            cond("PodScheduled", true),
        ]),
        init_container_statuses: (!init.is_empty()).then_some(init_statuses),
        container_statuses: Some(statuses),
        host_ip: view.host_ip.clone(),
        host_ips: view
            .host_ip
            .clone()
            .map(|ip| vec![k8s_openapi::api::core::v1::HostIP { ip }]),
        pod_ip,
        pod_ips: (!pod_ips.is_empty())
            .then(|| pod_ips.into_iter().map(|ip| PodIP { ip }).collect()),
        qos_class: Some(qos_class(view.spec).into()),
        start_time: Some(time(view.start_ms)),
        ..Default::default()
    }
}

/// Kubernetes' QoS class: Guaranteed when every container has equal cpu and memory requests and
/// limits, BestEffort when none has any, Burstable otherwise.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in &spec.containers {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        any |= !limits.is_empty() || !requests.is_empty();
        for res in ["cpu", "memory"] {
            let l = limits.get(res);
            let q = requests.get(res).or(l);
            guaranteed &= l.is_some() && q == l;
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        _ => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn spec(n: usize) -> PodSpec {
        PodSpec {
            containers: (0..n)
                .map(|i| Container {
                    name: format!("c{i}"),
                    image: Some("busybox:v1".into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn observed(name: &str, restarts: u32, state: State) -> Observed {
        Observed {
            id: format!("id-{name}"),
            name: name.into(),
            restart_count: restarts,
            state,
            created_ms: 1000,
        }
    }

    /// A view of `obs` in a pod of `spec`, nothing else known.
    fn view_of<'a>(spec: &'a PodSpec, obs: &'a [Observed]) -> PodView<'a> {
        PodView {
            spec,
            containers: obs.iter().map(|o| (o.name.clone(), o)).collect(),
            images: BTreeMap::new(),
            waiting: BTreeMap::new(),
            last_termination: BTreeMap::new(),
            previous_termination: BTreeMap::new(),
            host_ip: None,
            pod_ips: Vec::new(),
            start_ms: 0,
            gates: BTreeMap::new(),
        }
    }

    fn status_of(
        spec: &PodSpec,
        obs: &[Observed],
        waiting: &[(&str, &str)],
        prev: Option<&PodStatus>,
        now: i64,
    ) -> PodStatus {
        let view = PodView {
            spec,
            containers: obs.iter().map(|o| (o.name.clone(), o)).collect(),
            images: BTreeMap::new(),
            waiting: waiting
                .iter()
                .map(|(n, r)| {
                    (
                        n.to_string(),
                        Waiting {
                            reason: r.to_string(),
                            message: String::new(),
                        },
                    )
                })
                .collect(),
            last_termination: BTreeMap::new(),
            previous_termination: BTreeMap::new(),
            host_ip: Some("127.0.0.1".into()),
            pod_ips: Vec::new(),
            start_ms: 0,
            gates: BTreeMap::new(),
        };
        pod_status(&view, prev, now)
    }

    fn cond(s: &PodStatus, t: &str) -> String {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
            .status
            .clone()
    }

    #[test]
    fn phases_and_readiness() {
        let sp = spec(2);
        let run = |n: &str| observed(n, 0, State::Running);
        #[rustfmt::skip]
        type Case<'a> = (&'a str, Vec<Observed>, Vec<(&'a str, &'a str)>, &'a str, &'a str, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "nothing yet",
                vec![],
                vec![],
                "Pending",
                "False",
                vec!["ContainerCreating", "ContainerCreating"],
            ),
            (
                "pull failing",
                vec![],
                vec![("c0", "ErrImagePull")],
                "Pending",
                "False",
                vec!["ErrImagePull", "ContainerCreating"],
            ),
            (
                "one of two",
                vec![run("c0")],
                vec![],
                "Running",
                "False",
                vec!["running", "ContainerCreating"],
            ),
            (
                "both",
                vec![run("c0"), run("c1")],
                vec![],
                "Running",
                "True",
                vec!["running", "running"],
            ),
            (
                "crash loop",
                vec![
                    run("c0"),
                    observed(
                        "c1",
                        3,
                        State::Exited {
                            code: 2,
                            at_ms: Some(5),
                        },
                    ),
                ],
                vec![("c1", "CrashLoopBackOff")],
                "Running",
                "False",
                vec!["running", "CrashLoopBackOff"],
            ),
        ];
        for (what, obs, waiting, phase, ready, states) in cases {
            let s = status_of(&sp, &obs, &waiting, None, 10);
            assert_eq!(s.phase.as_deref(), Some(phase), "{what}");
            assert_eq!(cond(&s, "Ready"), ready, "{what}");
            let got: Vec<String> = s
                .container_statuses
                .unwrap()
                .iter()
                .map(|c| {
                    let st = c.state.as_ref().unwrap();
                    if st.running.is_some() {
                        "running".to_string()
                    } else {
                        st.waiting.as_ref().unwrap().reason.clone().unwrap()
                    }
                })
                .collect();
            assert_eq!(got, states, "{what}");
        }
    }

    #[test]
    fn termination_message_into_status() {
        let sp = spec(1);
        let mut dead = observed(
            "c0",
            2,
            State::Exited {
                code: 3,
                at_ms: Some(5000),
            },
        );
        dead.created_ms = 4000;
        let t = Termination {
            exit_code: 3,
            started_ms: 4000,
            finished_ms: Some(5000),
            message: Some("disk full".into()),
        };
        let view = PodView {
            spec: &sp,
            containers: BTreeMap::from([("c0".to_string(), &dead)]),
            images: BTreeMap::new(),
            waiting: BTreeMap::new(),
            last_termination: BTreeMap::from([("c0".to_string(), t.clone())]),
            previous_termination: BTreeMap::new(),
            host_ip: Some("192.0.2.2".into()),
            pod_ips: vec!["10.1.0.5".into(), "fd00::5".into()],
            start_ms: 0,
            gates: BTreeMap::new(),
        };
        let s = pod_status(&view, None, 6000);
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        let state = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (state.exit_code, state.message.as_deref()),
            (3, Some("disk full"))
        );
        // its termination is its state; its last state is the one before (none here)
        assert_eq!(cs.last_state, None);
        let earlier = Termination {
            exit_code: 1,
            started_ms: 1000,
            finished_ms: Some(2000),
            message: Some("earlier".into()),
        };
        let with_earlier = PodView {
            spec: &sp,
            previous_termination: BTreeMap::from([("c0".to_string(), earlier)]),
            last_termination: view.last_termination.clone(),
            containers: view.containers.clone(),
            images: BTreeMap::new(),
            waiting: BTreeMap::new(),
            host_ip: None,
            pod_ips: Vec::new(),
            start_ms: 0,
            gates: BTreeMap::new(),
        };
        let s = pod_status(&with_earlier, None, 6000);
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.message.as_deref(), Some("earlier"));
        // waiting for its restart, the container's last state is this termination
        let waiting = PodView {
            waiting: BTreeMap::from([(
                "c0".to_string(),
                Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: String::new(),
                },
            )]),
            ..with_earlier
        };
        let s = pod_status(&waiting, None, 6000);
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.message.as_deref(), Some("disk full"));
        // the pod's own IPs; a hostNetwork pod's are the node's
        let s = pod_status(&view, None, 6000);
        assert_eq!(s.pod_ip.as_deref(), Some("10.1.0.5"));
        let ips: Vec<&str> = s.pod_ips.iter().flatten().map(|p| p.ip.as_str()).collect();
        assert_eq!(ips, ["10.1.0.5", "fd00::5"]);
        let mut host = sp.clone();
        host.host_network = Some(true);
        let view = PodView {
            spec: &host,
            ..view
        };
        let s = pod_status(&view, None, 6000);
        assert_eq!(s.pod_ip.as_deref(), Some("192.0.2.2"));
        // a message of an earlier incarnation is not this one's
        let mut later = dead.clone();
        later.created_ms = 9000;
        let view = PodView {
            containers: BTreeMap::from([("c0".to_string(), &later)]),
            ..view
        };
        let s = pod_status(&view, None, 10000);
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .message,
            None
        );
    }

    #[test]
    fn probes_gate_started_and_ready() {
        let sp = spec(2);
        let obs = [
            observed("c0", 0, State::Running),
            observed("c1", 0, State::Running),
        ];
        let mut view = PodView {
            gates: BTreeMap::from([(
                "c1".to_string(),
                Gates {
                    started: true,
                    ready: false,
                },
            )]),
            ..view_of(&sp, &obs)
        };
        let s = pod_status(&view, None, 10);
        let cs = s.container_statuses.clone().unwrap();
        assert_eq!((cs[0].ready, cs[0].started), (true, Some(true)));
        assert_eq!((cs[1].ready, cs[1].started), (false, Some(true)));
        assert_eq!(cond(&s, "Ready"), "False");
        assert_eq!(cond(&s, "ContainersReady"), "False");
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [c1]")
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        view.gates.insert(
            "c1".into(),
            Gates {
                started: false,
                ready: false,
            },
        );
        let s = pod_status(&view, None, 10);
        assert_eq!(s.container_statuses.unwrap()[1].started, Some(false));
        view.gates.insert(
            "c1".into(),
            Gates {
                started: true,
                ready: true,
            },
        );
        assert_eq!(cond(&pod_status(&view, None, 10), "Ready"), "True");
    }

    #[test]
    fn transition_time_kept_while_unchanged() {
        let sp = spec(1);
        let obs = [observed("c0", 0, State::Running)];
        let first = status_of(&sp, &obs, &[], None, 1_000);
        let second = status_of(&sp, &obs, &[], Some(&first), 9_000);
        assert_eq!(first.conditions, second.conditions);
        let third = status_of(&sp, &[], &[], Some(&second), 12_000);
        let ready = third
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.last_transition_time, Some(time(12_000)));
    }

    #[test]
    fn init_containers_in_status_and_conditions() {
        let mut sp = spec(1);
        sp.init_containers = Some(vec![
            Container {
                name: "i1".into(),
                ..Default::default()
            },
            Container {
                name: "side".into(),
                restart_policy: Some("Always".into()),
                ..Default::default()
            },
        ]);
        let done = State::Exited {
            code: 0,
            at_ms: Some(5),
        };
        let failed = State::Exited {
            code: 1,
            at_ms: Some(5),
        };
        let init_states = |s: &PodStatus| -> Vec<String> {
            s.init_container_statuses
                .iter()
                .flatten()
                .map(|c| {
                    let st = c.state.as_ref().unwrap();
                    match (&st.running, &st.waiting, &st.terminated) {
                        (Some(_), _, _) => format!("running ready={}", c.ready),
                        (_, Some(w), _) => w.reason.clone().unwrap(),
                        (_, _, Some(t)) => {
                            format!("{} ready={}", t.reason.clone().unwrap(), c.ready)
                        }
                        _ => "?".into(),
                    }
                })
                .collect()
        };
        let message = |s: &PodStatus, t: &str| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .message
                .clone()
        };
        #[rustfmt::skip]
        type InitCase<'a> = (&'a str, Vec<Observed>, Vec<(&'a str, &'a str)>, &'a str, &'a str, Vec<&'a str>, &'a str);
        let cases: Vec<InitCase> = vec![
            (
                "nothing yet: everything waits PodInitializing",
                vec![],
                vec![],
                "Pending",
                "False",
                vec!["PodInitializing", "PodInitializing"],
                "PodInitializing",
            ),
            (
                "first failed, in back-off",
                vec![observed("i1", 2, failed)],
                vec![("i1", "CrashLoopBackOff")],
                "Pending",
                "False",
                vec!["CrashLoopBackOff", "PodInitializing"],
                "PodInitializing",
            ),
            (
                "first failed, restarting",
                vec![observed("i1", 1, failed)],
                vec![],
                "Pending",
                "False",
                vec!["Error ready=false", "PodInitializing"],
                "PodInitializing",
            ),
            (
                "first done, sidecar running: initialized",
                vec![observed("i1", 0, done), observed("side", 0, State::Running)],
                vec![],
                "Pending",
                "True",
                vec!["Completed ready=true", "running ready=true"],
                "PodInitializing",
            ),
            (
                "all running",
                vec![
                    observed("i1", 0, done),
                    observed("side", 0, State::Running),
                    observed("c0", 0, State::Running),
                ],
                vec![],
                "Running",
                "True",
                vec!["Completed ready=true", "running ready=true"],
                "running",
            ),
        ];
        for (what, obs, waiting, phase, initialized, init_want, app) in cases {
            let s = status_of(&sp, &obs, &waiting, None, 10);
            assert_eq!(s.phase.as_deref(), Some(phase), "{what}");
            assert_eq!(cond(&s, "Initialized"), initialized, "{what}");
            assert_eq!(init_states(&s), init_want, "{what}");
            let st = s.container_statuses.as_ref().unwrap()[0]
                .state
                .clone()
                .unwrap();
            let got = st
                .waiting
                .and_then(|w| w.reason)
                .unwrap_or_else(|| "running".into());
            assert_eq!(got, app, "{what}");
        }
        let s = status_of(&sp, &[observed("i1", 0, done)], &[], None, 10);
        assert_eq!(
            message(&s, "Initialized").as_deref(),
            Some("containers with incomplete status: [side]")
        );
        assert_eq!(
            message(&s, "Ready").as_deref(),
            Some("containers with unready status: [side c0]")
        );
        // a sidecar whose startup probe has not passed holds the pod's initialization
        let obs = [observed("i1", 0, done), observed("side", 0, State::Running)];
        let mut view = PodView {
            gates: BTreeMap::from([(
                "side".to_string(),
                Gates {
                    started: false,
                    ready: false,
                },
            )]),
            ..view_of(&sp, &obs)
        };
        assert_eq!(cond(&pod_status(&view, None, 10), "Initialized"), "False");
        view.gates.clear();
        assert_eq!(cond(&pod_status(&view, None, 10), "Initialized"), "True");
    }

    #[test]
    fn qos_classes() {
        let with = |limits: &[(&str, &str)], requests: &[(&str, &str)]| {
            let q = |v: &[(&str, &str)]| {
                (!v.is_empty()).then(|| {
                    v.iter()
                        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                        .collect()
                })
            };
            let mut s = spec(1);
            s.containers[0].resources = Some(ResourceRequirements {
                limits: q(limits),
                requests: q(requests),
                ..Default::default()
            });
            qos_class(&s)
        };
        assert_eq!(with(&[], &[]), "BestEffort");
        assert_eq!(with(&[("cpu", "1"), ("memory", "1Gi")], &[]), "Guaranteed");
        assert_eq!(
            with(&[("memory", "200Mi"), ("cpu", "100m")], &[("cpu", "50m")]),
            "Burstable"
        );
        assert_eq!(with(&[("memory", "200Mi")], &[]), "Burstable");
    }
}
