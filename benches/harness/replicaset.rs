//! The ReplicaSet benchmarks (issue 13):
//! 1. scale: time from `kubectl scale --replicas=N` (the `replicasets/scale` PATCH kubectl sends)
//!    to N containers running across a fleet of real agents (N = 100 over 10; smoke 10 over 3),
//!    read from containerd (all nodes' namespaces asked at once every 50 ms), against the floor:
//!    N containerd create+starts at once through the minimal client, in the same run;
//! 2. scheduler throughput: pods bound per second for 1000 pending pods over 100 simulated nodes
//!    (Node objects whose status and Leases the harness writes, as kubemark's hollow nodes; no
//!    agent; smoke 100 over 10). The pods wait first (their nodeSelector matches no node); the
//!    clock starts when the harness labels every node at once (concurrent PATCHes) and stops
//!    when the last pod is bound.
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;

use super::*;

const RS: &str = "bench-rs";

impl Bench {
    pub(super) async fn replicasets(&mut self) -> Result<()> {
        let (agents_n, replicas, sim_nodes, pending) = if self.o.smoke {
            (3, 10, 10, 100)
        } else {
            (10, 100, 100, 1000)
        };
        self.rs_scale(agents_n, replicas).await?;
        self.rs_scheduler(sim_nodes, pending).await
    }

    async fn rs_scale(&mut self, agents_n: usize, replicas: usize) -> Result<()> {
        let kubeconfig = self.o.dir.join("server/admin.kubeconfig");
        let mut agents = Vec::new();
        let mut namespaces = Vec::new();
        for i in 0..agents_n {
            let node = format!("rs-{i:02}");
            let ns = format!("{}-rs-{i:02}", self.o.tag);
            let args: Vec<String> = vec![
                "agent".into(),
                "--node-name".into(),
                node.clone(),
                "--kubeconfig".into(),
                kubeconfig.to_string_lossy().into(),
                "--containerd-socket".into(),
                self.o.socket.to_string_lossy().into(),
                "--containerd-namespace".into(),
                ns.clone(),
                "--state-dir".into(),
                self.o.dir.join(&node).to_string_lossy().into(),
                "--node-label".into(),
                "bench-rs=yes".into(),
            ];
            let log = self.o.dir.join(format!("agent-{node}.log"));
            agents.push(Proc::spawn(&self.o.bin, &args, &log, "replicaset agent")?);
            namespaces.push(ns);
        }
        for i in 0..agents_n {
            let path = format!("/api/v1/nodes/rs-{i:02}");
            let deadline = Instant::now() + Duration::from_secs(60);
            while !matches!(http_get(&self.wire, &path).await, Ok((200, _))) {
                if Instant::now() > deadline {
                    bail!("replicaset agent rs-{i:02} did not register in 60 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // the floor: N create+starts at once, in the same run
        eprintln!("[harness] replicasets: floor, {replicas} containers");
        let ids: Vec<String> = (0..replicas).map(|i| format!("floor-rs-{i:03}")).collect();
        let fns = self.floor_ns();
        let t0 = Instant::now();
        {
            let f = &self.floor;
            for r in join_all(ids.iter().map(|id| f.create(id, false))).await {
                r?;
            }
        }
        let set: HashSet<String> = ids.iter().cloned().collect();
        let (end, _) = self
            .wait_set(
                "floor create",
                &fns,
                set,
                false,
                &HashSet::new(),
                HashSet::new(),
                Duration::from_secs(300),
            )
            .await?;
        let floor = end - t0;
        self.floor_remove_all().await?;

        // ours: a ReplicaSet of 0 replicas on the fleet, then scaled to N
        let client = self.api.clone().into_client();
        let rs_api: Api<ReplicaSet> = Api::namespaced(client, "default");
        let rs: ReplicaSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": RS, "namespace": "default"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": RS}},
                "template": {"metadata": {"labels": {"app": RS}}, "spec": {
                    "nodeSelector": {"bench-rs": "yes"},
                    "terminationGracePeriodSeconds": GRACE,
                    "containers": [{"name": "c", "image": self.image_v1,
                        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]}]}}},
        }))?;
        rs_api.create(&PostParams::default(), &rs).await?;
        eprintln!("[harness] replicasets: scale to {replicas} over {agents_n} agents");
        let ctd = self.agent_rt.client().clone();
        let t0 = Instant::now();
        rs_api
            .patch_scale(
                RS,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await?;
        let took = wait_running(&ctd, &namespaces, replicas, Duration::from_secs(600))
            .await
            .context("the scaled ReplicaSet")?
            - t0;
        let ratio = took.as_secs_f64() / floor.as_secs_f64();
        self.report.row(
            &format!("scale rs 0 -> {replicas} over {agents_n} agents, running"),
            format!("{:.2} s", took.as_secs_f64()),
            format!("{:.2} s ({replicas} create+start)", floor.as_secs_f64()),
            Some(ratio),
        );
        // scale back to 0 and wait for the fleet to be empty (not timed)
        rs_api
            .patch_scale(
                RS,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 0}})),
            )
            .await?;
        wait_running(&ctd, &namespaces, 0, Duration::from_secs(300))
            .await
            .context("scaled back to 0")?;
        rs_api.delete(RS, &DeleteParams::default()).await?;
        self.report.json.insert(
            "replicaset_scale".into(),
            json!({"agents": agents_n, "replicas": replicas, "took_s": took.as_secs_f64(),
                "floor_s": floor.as_secs_f64(), "ratio": ratio}),
        );
        for a in &mut agents {
            a.check()?;
        }
        Ok(())
    }

    async fn rs_scheduler(&mut self, nodes_n: usize, pods_n: usize) -> Result<()> {
        let client = self.api.clone().into_client();
        let nodes: Api<Node> = Api::all(client.clone());
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(client.clone(), "kube-node-lease");
        let names: Vec<String> = (0..nodes_n).map(|i| format!("sim-{i:03}")).collect();
        eprintln!("[harness] scheduler: {nodes_n} simulated nodes");
        let pp = PostParams::default();
        for chunk in names.chunks(20) {
            let made = join_all(chunk.iter().map(|n| {
                let (nodes, leases, pp) = (&nodes, &leases, &pp);
                async move {
                    let node: Node = serde_json::from_value(json!({
                        "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}}}))?;
                    nodes.create(pp, &node).await?;
                    let status = json!({"status": {
                        "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                        "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "lastHeartbeatTime": chrono::Utc::now().to_rfc3339()}]}});
                    nodes
                        .patch_status(n, &PatchParams::default(), &Patch::Merge(&status))
                        .await?;
                    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": n, "namespace": "kube-node-lease"},
                        "spec": {"holderIdentity": n, "leaseDurationSeconds": 40,
                            "renewTime": micro_now()}});
                    leases.create(pp, &serde_json::from_value(lease)?).await?;
                    Ok::<(), anyhow::Error>(())
                }
            }))
            .await;
            for r in made {
                r?;
            }
        }
        // the harness renews the Leases every 10 s, as an agent would
        let renewing = {
            let (leases, names) = (leases.clone(), names.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    let patch = Patch::Merge(json!({"spec": {"renewTime": micro_now()}}));
                    let pp = PatchParams::default();
                    let jobs = names.iter().map(|n| leases.patch(n, &pp, &patch));
                    for r in join_all(jobs).await {
                        if let Err(e) = r {
                            eprintln!("[harness] scheduler: lease renewal failed: {e}");
                        }
                    }
                }
            })
        };
        let res = async {
            eprintln!("[harness] scheduler: {pods_n} pending pods");
            let pod_names: Vec<String> = (0..pods_n).map(|i| format!("sched-{i:04}")).collect();
            for chunk in pod_names.chunks(50) {
                let made = join_all(chunk.iter().map(|p| {
                    let (pods, pp) = (&pods, &pp);
                    async move {
                        let pod: Pod = serde_json::from_value(json!({
                            "metadata": {"name": p, "labels": {"app": "sched-bench"}},
                            "spec": {"nodeSelector": {"bench-sim": "go"},
                                "containers": [{"name": "c", "image": "unused",
                                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}))?;
                        pods.create(pp, &pod).await?;
                        Ok::<(), anyhow::Error>(())
                    }
                }))
                .await;
                for r in made {
                    r?;
                }
            }
            // every pod seen and marked unschedulable first: the scheduler is idle at t0
            let lp = ListParams::default().labels("app=sched-bench");
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                let list = pods.list(&lp).await?;
                let marked = list
                    .items
                    .iter()
                    .filter(|p| {
                        p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| {
                                    c.type_ == "PodScheduled"
                                        && c.reason.as_deref() == Some("Unschedulable")
                                })
                            })
                    })
                    .count();
                if marked == pods_n {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("only {marked} of {pods_n} pods were marked unschedulable in 300 s");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let t0 = Instant::now();
            let label = Patch::Merge(json!({"metadata": {"labels": {"bench-sim": "go"}}}));
            let patch_params = PatchParams::default();
            for r in join_all(names.iter().map(|n| nodes.patch(n, &patch_params, &label)))
                .await
            {
                r?;
            }
            let unbound = ListParams::default()
                .labels("app=sched-bench")
                .fields("spec.nodeName=");
            let deadline = Instant::now() + Duration::from_secs(600);
            let took = loop {
                let left = pods.list(&unbound).await?.items.len();
                if left == 0 {
                    break t0.elapsed();
                }
                if Instant::now() > deadline {
                    bail!("{left} of {pods_n} pods still unbound after 600 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let rate = pods_n as f64 / took.as_secs_f64();
            self.report
                .row(
                    &format!("scheduler: {pods_n} pending pods over {nodes_n} nodes"),
                    format!("{rate:.0} pods/s"),
                    format!("{:.2} s to bind all", took.as_secs_f64()),
                    None,
                );
            self.report.json.insert(
                "scheduler".into(),
                json!({"nodes": nodes_n, "pods": pods_n, "took_s": took.as_secs_f64(),
                    "pods_per_s": rate}),
            );
            Ok::<(), anyhow::Error>(())
        }
        .await;
        renewing.abort();
        // cleanup: the pods at once (no agent runs them), the nodes and their Leases
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        pods.delete_collection(&now, &ListParams::default().labels("app=sched-bench"))
            .await?;
        for n in &names {
            nodes.delete(n, &DeleteParams::default()).await?;
            leases.delete(n, &DeleteParams::default()).await?;
        }
        res
    }
}

/// MicroTime now.
fn micro_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Waits until `namespaces` together run exactly `n` tasks (asked at once every 50 ms); returns
/// when that was first seen.
async fn wait_running(
    ctd: &Ctd,
    namespaces: &[String],
    n: usize,
    timeout: Duration,
) -> Result<Instant> {
    use containerd_client::services::v1::ListTasksRequest;
    let conns: Vec<Ctd> = namespaces
        .iter()
        .map(|ns| {
            let mut c = ctd.clone();
            c.namespace = ns.clone();
            c
        })
        .collect();
    let deadline = Instant::now() + timeout;
    loop {
        let counts = futures::future::try_join_all(conns.iter().map(|c| async move {
            let tasks = c
                .tasks()
                .list(c.req(ListTasksRequest::default()))
                .await?
                .into_inner()
                .tasks;
            Ok::<usize, tonic::Status>(
                tasks
                    .iter()
                    .filter(|t| t.status == containerd_client::types::v1::Status::Running as i32)
                    .count(),
            )
        }))
        .await?;
        let at = Instant::now();
        let running: usize = counts.iter().sum();
        if running == n {
            return Ok(at);
        }
        if at > deadline {
            bail!("{running} of {n} containers running after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
