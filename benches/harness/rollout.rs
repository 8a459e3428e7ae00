//! The rollout benchmark (issue 9): a template change rolled over a fleet of agents (20; 5 in the
//! smoke run), each its own process with its own node name and containerd namespace, once with
//! `maxUnavailable: 25%` and once with `maxSurge: 25%`. The total time is compared with the bound
//! `ceil(nodes / budget) x t1`, where t1 is the time of the same change on a DaemonSet of one node
//! (replace one pod, pre-pull included, plus minReadySeconds) measured in the same run. A sampler
//! reads containerd every 100 ms (running tasks per namespace) and counts the samples where more
//! nodes than the budget were without a running pod, or more than maxSurge ran two.
//!
//! The bound takes a wave of `budget` nodes to cost what one node alone does, as it does on a real
//! fleet (a machine per node). Here the nodes share the machine's cores and one containerd, so a
//! last row times one whole wave (the first `budget` nodes at once, images present) and reports
//! the fleet's time against `ceil(nodes / budget)` of those too: what this machine can do, beside
//! the bound (which stays the target).
use std::sync::atomic::AtomicBool;

use super::*;

const MIN_READY: i64 = 1;
const BUDGET_PERCENT: i64 = 25;

/// What one rollout measured.
struct Measured {
    took: Duration,
    samples: usize,
    over: usize,
    worst_down: usize,
    worst_double: usize,
}

fn rollout_ds(name: &str, image: &str, label: &str, strategy: Value) -> Result<DaemonSet> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "minReadySeconds": MIN_READY,
            "updateStrategy": strategy,
            "template": {"metadata": {"labels": {"app": name}}, "spec": {
                "nodeSelector": {label: "yes"},
                "terminationGracePeriodSeconds": GRACE,
                "containers": [{"name": "c", "image": image,
                    "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]}],
            }},
        },
    }))?)
}

impl Bench {
    pub(super) async fn rollout(&mut self) -> Result<()> {
        let n = if self.o.smoke { 5 } else { 20 };
        let budget = (n as i64 * BUDGET_PERCENT + 99) / 100;
        let kubeconfig = self.o.dir.join("server/admin.kubeconfig");
        let mut agents = Vec::new();
        let mut namespaces = Vec::new();
        for i in 0..n {
            let node = format!("roll-{i:02}");
            let ns = format!("{}-roll-{i:02}", self.o.tag);
            let mut args: Vec<String> = vec![
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
                "bench-rollout=yes".into(),
            ];
            if i == 0 {
                args.extend(["--node-label".into(), "bench-rollout-one=yes".into()]);
            }
            if (i as i64) < budget {
                args.extend(["--node-label".into(), "bench-rollout-wave=yes".into()]);
            }
            let log = self.o.dir.join(format!("agent-{node}.log"));
            agents.push(Proc::spawn(&self.o.bin, &args, &log, "rollout agent")?);
            namespaces.push(ns);
        }
        for i in 0..n {
            let path = format!("/api/v1/nodes/roll-{i:02}");
            let deadline = Instant::now() + Duration::from_secs(60);
            while !matches!(http_get(&self.wire, &path).await, Ok((200, _))) {
                if Instant::now() > deadline {
                    bail!("rollout agent roll-{i:02} did not register in 60 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let unavailable = json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": format!("{BUDGET_PERCENT}%")}});
        let surge = json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": format!("{BUDGET_PERCENT}%")}});
        // t1, the bound's unit, is the median of three one-node rollouts: one alone swung from
        // 1.0 to 2.0 s between runs on a loaded machine and the ratio with it. The first of them
        // pulls the new image (the later ones find it on the node): every fleet rollout pays
        // that pull once too (all nodes pre-pull at once when the template changes), so a
        // second bound counts it once, `ceil(n / budget) x t1 + (cold - t1)`, reported beside.
        let mut ones = Vec::new();
        for k in 0..3 {
            let m = self
                .roll(
                    &format!("roll-one-{k}"),
                    "bench-rollout-one",
                    unavailable.clone(),
                    &namespaces[..1],
                    1,
                    (1, 0),
                )
                .await?;
            ones.push(m.took.as_secs_f64());
        }
        let cold = ones[0];
        let runs = ones.clone();
        ones.sort_by(f64::total_cmp);
        let t1 = ones[1];
        let bound = t1 * ((n as i64 + budget - 1) / budget) as f64;
        let pull = (cold - t1).max(0.0);
        self.report.row(
            "rollout: one node, replace + minReady",
            format!("{t1:.2} s"),
            format!(
                "median of {:.2}/{:.2}/{:.2} (the first pulls)",
                runs[0], runs[1], runs[2]
            ),
            None,
        );
        let mut took = Vec::new();
        let mut rows = serde_json::Map::new();
        rows.insert("one_node_s".into(), json!(t1));
        rows.insert("one_node_runs_s".into(), json!(runs));
        rows.insert("one_node_cold_s".into(), json!(cold));
        for (label, strategy, limits) in [
            ("maxUnavailable", unavailable, (budget as usize, 0)),
            ("maxSurge", surge, (0, budget as usize)),
        ] {
            let name = format!("roll-{}", label.to_lowercase());
            let m = self
                .roll(&name, "bench-rollout", strategy, &namespaces, n, limits)
                .await?;
            let ratio = m.took.as_secs_f64() / bound;
            self.report
                .row(
                    &format!("rollout {n} nodes, {label} {BUDGET_PERCENT}%"),
                    format!(
                        "{:.2} s, over {}/{}",
                        m.took.as_secs_f64(),
                        m.over,
                        m.samples
                    ),
                    format!("bound {bound:.2} s"),
                    Some(ratio),
                )
                .target("<= 1.2, 0 over", ratio <= 1.2 && m.over == 0);
            let ratio_pull = m.took.as_secs_f64() / (bound + pull);
            self.report.row(
                "  the same, the bound with one pull",
                format!("{:.2} s", m.took.as_secs_f64()),
                format!("bound {:.2} s", bound + pull),
                Some(ratio_pull),
            );
            took.push((label, m.took.as_secs_f64()));
            rows.insert(
                label.into(),
                json!({"nodes": n, "budget": budget, "took_s": m.took.as_secs_f64(),
                    "bound_s": bound, "ratio": ratio, "samples": m.samples, "over_budget": m.over,
                    "worst_down": m.worst_down, "worst_double": m.worst_double,
                    "bound_with_pull_s": bound + pull, "ratio_with_pull": ratio_pull}),
            );
        }
        // one wave alone, after the fleet runs (every node has both images by then), median of 3
        let wave_strategy = json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": budget}});
        let mut waves = Vec::new();
        for k in 0..3 {
            let m = self
                .roll(
                    &format!("roll-wave-{k}"),
                    "bench-rollout-wave",
                    wave_strategy.clone(),
                    &namespaces[..budget as usize],
                    budget as usize,
                    (budget as usize, 0),
                )
                .await?;
            waves.push(m.took.as_secs_f64());
        }
        let wave_runs = waves.clone();
        waves.sort_by(f64::total_cmp);
        let wave = waves[1];
        let wave_bound = wave * ((n as i64 + budget - 1) / budget) as f64;
        self.report.row(
            &format!("rollout: one wave, {budget} nodes at once"),
            format!("{wave:.2} s"),
            format!(
                "median of {:.2}/{:.2}/{:.2}; one node {t1:.2} s",
                wave_runs[0], wave_runs[1], wave_runs[2]
            ),
            Some(wave / t1),
        );
        for (label, took) in took {
            self.report.row(
                &format!("  {label}: against waves on this machine"),
                format!("{took:.2} s"),
                format!("bound {wave_bound:.2} s"),
                Some(took / wave_bound),
            );
        }
        rows.insert("one_wave_s".into(), json!(wave));
        rows.insert("one_wave_runs_s".into(), json!(wave_runs));
        rows.insert("wave_bound_s".into(), json!(wave_bound));
        self.report
            .json
            .insert("rollout".into(), Value::Object(rows));
        for a in &mut agents {
            a.check()?;
        }
        Ok(())
    }

    /// Creates `name` on the `count` nodes labelled `label`, waits until it is available, then
    /// changes its image and times the rollout, sampling `namespaces` against `limits`
    /// (maxUnavailable, maxSurge); deletes it and waits until its pods are gone.
    async fn roll(
        &mut self,
        name: &str,
        label: &str,
        strategy: Value,
        namespaces: &[String],
        count: usize,
        limits: (usize, usize),
    ) -> Result<Measured> {
        let ds = rollout_ds(name, &self.image_v1, label, strategy)?;
        self.api.create(&PostParams::default(), &ds).await?;
        self.rolled_out(name, count, 1, Duration::from_secs(120))
            .await
            .context("the first rollout")?;
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = tokio::spawn(sample(
            self.agent_rt.client().clone(),
            namespaces.to_vec(),
            name.to_string(),
            limits,
            stop.clone(),
        ));
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": self.image_v2}]}}}});
        let t0 = Instant::now();
        self.api
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await?;
        self.rolled_out(name, count, 2, Duration::from_secs(600))
            .await
            .context("the timed rollout")?;
        let took = t0.elapsed();
        stop.store(true, Ordering::SeqCst);
        let (samples, over, worst_down, worst_double) = sampler.await??;
        self.api.delete(name, &DeleteParams::default()).await?;
        // The agents remove the pods (CNI DEL included) before the next roll or their stop: an
        // agent stopped with its pods up leaves them running, as the kubelet does, and their
        // address reservations held until an agent comes back, which never happens here.
        self.pods_gone(name, Duration::from_secs(120)).await?;
        Ok(Measured {
            took,
            samples,
            over,
            worst_down,
            worst_double,
        })
    }

    /// Waits until no pod of DaemonSet `name` (label `app`) is left in the API: the agents
    /// delete a pod for good only once its sandbox is removed.
    pub(super) async fn pods_gone(&self, name: &str, timeout: Duration) -> Result<()> {
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.api.clone().into_client(), "default");
        let lp = kube::api::ListParams::default().labels(&format!("app={name}"));
        let deadline = Instant::now() + timeout;
        loop {
            let left = pods.list(&lp).await?.items.len();
            if left == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name}: {left} pod(s) still there {timeout:?} after its delete");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `name` at `generation` runs an available pod of its template on `count` nodes.
    pub(super) async fn rolled_out(
        &self,
        name: &str,
        count: usize,
        generation: i64,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ds = self.api.get(name).await?;
            let st = ds.status.unwrap_or_default();
            let c = count as i32;
            if st.observed_generation.unwrap_or(0) >= generation
                && st.desired_number_scheduled == c
                && st.updated_number_scheduled == Some(c)
                && st.number_available == Some(c)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name}: not rolled out in {timeout:?}: {st:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Every 100 ms, the running tasks of `name` per namespace: (samples, samples over `limits`,
/// worst nodes without one, worst nodes with two).
async fn sample(
    ctd: Ctd,
    namespaces: Vec<String>,
    name: String,
    limits: (usize, usize),
    stop: Arc<AtomicBool>,
) -> Result<(usize, usize, usize, usize)> {
    use containerd_client::services::v1::ListTasksRequest;
    let mut conns = Vec::new();
    for ns in &namespaces {
        let mut c = ctd.clone();
        c.namespace = ns.clone();
        conns.push(c);
    }
    let (mut samples, mut over, mut worst_down, mut worst_double) = (0, 0, 0, 0);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        // All nodes asked at once: asked one after another, a sample spanned 100+ ms of a
        // loaded machine and could count a node down before its new pod started and another
        // down after its old one stopped, a moment that never existed.
        let name = name.as_str();
        let ups = futures::future::try_join_all(conns.iter().map(|c| async move {
            let tasks = c
                .tasks()
                .list(c.req(ListTasksRequest::default()))
                .await?
                .into_inner()
                .tasks;
            Ok::<usize, tonic::Status>(
                tasks
                    .iter()
                    .filter(|t| {
                        t.status == containerd_client::types::v1::Status::Running as i32
                            && ds_of(&t.id) == Some(name)
                    })
                    .count(),
            )
        }))
        .await?;
        let down = ups.iter().filter(|&&up| up == 0).count();
        let double = ups.iter().filter(|&&up| up >= 2).count();
        samples += 1;
        worst_down = worst_down.max(down);
        worst_double = worst_double.max(double);
        if down > limits.0 || double > limits.1 {
            over += 1;
        }
    }
    Ok((samples, over, worst_down, worst_double))
}
