use super::*;

mod ids {
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

mod worker_tests {
    use super::*;
    use crate::agent::worker::fake::FakeRuntime;
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
mod pod_tests {
    use super::*;
    use crate::agent::prober::fake::FakeProber;
    use crate::agent::worker::fake::FakeRuntime;
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

    /// A restarted agent adopts a pod that was ready all along: its first status keeps the
    /// Ready condition's lastTransitionTime from the API (the kubelet's status manager starts
    /// from the API's status). Reset to now, it made the DaemonSet controller count the pod
    /// unavailable for minReadySeconds and replace it at once, beside the node the rollout was
    /// replacing: two nodes down against maxUnavailable 1 (rollout_fleet, deaths mid-rollout).
    /// The status sent by the sync that starts a container says what the runtime runs then:
    /// the container running since the runtime's record of it, and the pod Ready at once when
    /// it has no readiness probe. The round its start asks for lists the same and changes
    /// nothing, so nothing more is written. (The status used to be the one from before the
    /// start, Ready one round later: a status write and a containerd listing on every node of a
    /// rollout, between its new pod starting and the next node's turn.)
    #[tokio::test(start_paused = true)]
    async fn a_started_container_is_reported_running_and_ready_at_once() {
        let mut h = Harness::new(Container {
            name: "main".into(),
            image: Some("busybox:v1".into()),
            ..Default::default()
        });
        h.round();
        let (st, changed) = h.until("the first status", |_| true).await;
        assert!(changed, "a start asks for a round");
        assert!(running(&st), "{st:?}");
        let cs = main_status(&st);
        assert!(cs.ready && cs.started == Some(true), "{cs:?}");
        let ready = st.conditions.iter().flatten().find(|c| c.type_ == "Ready");
        assert_eq!(ready.map(|c| c.status.as_str()), Some("True"), "{st:?}");
        let recorded = h.rt.containers.lock().unwrap()["default_p_main_0"].created_at;
        let started_at = cs.state.unwrap().running.unwrap().started_at;
        assert_eq!(started_at.map(|t| t.0.as_second()), Some(recorded));
        h.round();
        let (listed, changed) = h.until("the listed status", |_| true).await;
        assert!(!changed, "nothing left to do");
        assert_eq!(listed, st, "the listing says what the start said");
    }

    /// With a readiness probe the started container is running at once and Ready as soon as its
    /// first probe passes, within one period, with no round in between.
    #[tokio::test(start_paused = true)]
    async fn a_started_container_is_ready_after_its_first_passing_probe() {
        let mut h = Harness::new(Container {
            name: "main".into(),
            image: Some("busybox:v1".into()),
            readiness_probe: exec("ready", 3),
            ..Default::default()
        });
        let t0 = tokio::time::Instant::now();
        h.round();
        let (st, _) = h.until("the first status", |_| true).await;
        assert!(running(&st), "{st:?}");
        assert!(!main_status(&st).ready, "not ready before a probe passed");
        let (st, changed) = h.until("ready", |s| main_status(s).ready).await;
        assert!(!changed, "a passing probe needs no round");
        let ready = st.conditions.iter().flatten().find(|c| c.type_ == "Ready");
        assert_eq!(ready.map(|c| c.status.as_str()), Some("True"));
        assert!(h.prober.count("ready") >= 1);
        assert!(
            t0.elapsed() <= Duration::from_secs(1),
            "within the probe's period: {:?}",
            t0.elapsed()
        );
    }

    /// A pod the API deletes: its containers stop first (within the grace period), then their
    /// records go while its sandbox is removed, not one after the other, so the pod is gone
    /// (its final delete sent: in a rolling update, the node's turn for its next pod) after the
    /// longer of the two removals, not their sum.
    #[tokio::test(start_paused = true)]
    async fn a_deleted_pods_container_goes_while_its_sandbox_is_removed() {
        let mut h = Harness::new(Container {
            name: "main".into(),
            image: Some("busybox:v1".into()),
            ..Default::default()
        });
        h.round();
        h.until("running", running).await;
        h.rt.removal_ms
            .store(1_000, std::sync::atomic::Ordering::SeqCst);
        let mut deleted = h.pod.clone();
        deleted.deletion = Some(plan::Deletion {
            at_ms: h.rt.clock.as_ref().unwrap().now_ms(),
            grace_seconds: 3,
        });
        let t0 = tokio::time::Instant::now();
        h.tx.send(Work {
            desired: Some(deleted),
            observed: h.rt.containers.lock().unwrap().values().cloned().collect(),
            listed_at: None,
            round: 0,
        })
        .unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(60), h.rx.recv()).await {
                Ok(Some(Report::Gone { .. })) => break,
                Ok(Some(Report::Status { .. })) => {}
                other => panic!("the pod never went: {other:?}"),
            }
        }
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(1),
            "the two removals overlap"
        );
        let calls = h.rt.calls.lock().unwrap().clone();
        let pos = |c: &str| calls.iter().position(|x| x == c).unwrap_or(usize::MAX);
        let (stop, remove) = (pos("stop default_p_main_0"), pos("remove default_p_main_0"));
        let sandbox = pos("remove-sandbox uid-p");
        assert!(
            stop < remove && stop < sandbox && sandbox != usize::MAX && remove != usize::MAX,
            "stopped first, then both removals: {calls:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_agent_keeps_the_ready_transition_time_the_api_has() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let mut h = Harness::new(Container {
            name: "main".into(),
            image: Some("busybox:v1".into()),
            ..Default::default()
        });
        let base_s = BASE_MS / 1000;
        let mut c = dead(&h.pod, 0, base_s - 3600, 0);
        c.state = TaskState::Running { pid: 1 };
        h.rt.containers.lock().unwrap().insert(c.id.clone(), c);
        let an_hour_ago = Time(k8s_openapi::jiff::Timestamp::from_second(base_s - 3590).unwrap());
        let condition = |type_: &str, status: &str| k8s_openapi::api::core::v1::PodCondition {
            type_: type_.into(),
            status: status.into(),
            last_transition_time: Some(an_hour_ago.clone()),
            ..Default::default()
        };
        h.pod.api_start_ms = Some((base_s - 3600) * 1000);
        h.pod.api_conditions = vec![
            condition("Ready", "True"),
            condition("ContainersReady", "True"),
            // the API says not initialized: the worker's own view (True) transitions now
            condition("Initialized", "False"),
        ];
        h.round();
        let (st, _) = h.until("a status", running).await;
        let since = |type_: &str| {
            st.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == type_)
                .and_then(|c| c.last_transition_time.clone())
        };
        assert_eq!(since("Ready"), Some(an_hour_ago.clone()), "{st:?}");
        assert_eq!(since("ContainersReady"), Some(an_hour_ago.clone()));
        assert_ne!(
            since("Initialized"),
            Some(an_hour_ago),
            "a changed status moves"
        );
        assert_eq!(
            st.start_time.map(|t| t.0.as_second()),
            Some(base_s - 3600),
            "the start time kept"
        );
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
