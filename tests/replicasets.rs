//! ReplicaSets across a fleet, with real parts only: the `daemonset-agent` binary as server and
//! as four agents (nodes r0..r3, each with its own containerd namespace on one real containerd +
//! runc), images from the loopback registry, kubectl 1.27 and the newest. What runs is read from
//! containerd itself (the running tasks of each node's namespace), not from the API under test.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::proc::{AgentArgs, Proc};
use common::{wait_for, Containerd};
use containerd_client::services::v1::ListTasksRequest;
use daemonset_agent::runtime::client::Ctd;
use serde_json::Value;

const NODES: usize = 4;
const SETTLE: Duration = Duration::from_secs(120);

struct Fleet {
    /// First, so it drops first: removes everything the test made, pass or fail.
    _guard: common::Guard,
    dir: tempfile::TempDir,
    ctd: Containerd,
    _server: Proc,
    kubeconfig: PathBuf,
    agents: Vec<Proc>,
    /// The agents' configuration file (its node-lease-duration).
    agent_toml: String,
}

fn node(i: usize) -> String {
    format!("r{i}")
}

fn spawn(dir: &Path, log: &str, args: &[&str]) -> Proc {
    Proc::spawn(
        args,
        dir.join(format!("{log}-{:x}.log", rand::random::<u32>())),
    )
}

impl Fleet {
    fn start() -> Fleet {
        Fleet::start_with(&[], "")
    }

    /// A fleet whose server takes `server_flags` too and whose agents' configuration files hold
    /// `agent_toml` too.
    fn start_with(server_flags: &[&str], agent_toml: &str) -> Fleet {
        let ctd = Containerd::start();
        let dir = tempfile::Builder::new()
            .prefix("dsa-rs-")
            .tempdir_in("/tmp")
            .unwrap();
        let listen = format!("127.0.0.1:{}", common::free_port());
        let guard = common::Guard::new().containerd(&ctd).dir(dir.path());
        let data = dir.path().join("server");
        let mut args = vec![
            "server",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
        ];
        args.extend(server_flags);
        let server = spawn(dir.path(), "server", &args);
        let kubeconfig = data.join("admin.kubeconfig");
        let mut f = Fleet {
            _guard: guard,
            dir,
            ctd,
            _server: server,
            kubeconfig,
            agents: vec![],
            agent_toml: format!("container-logs-to-journald = false\n{agent_toml}"),
        };
        wait_for("the server to answer", Duration::from_secs(20), || {
            (f.kubeconfig.exists() && f.kubectl(&["get", "--raw", "/readyz"]).status.success())
                .then_some(())
        });
        for i in 0..NODES {
            let agent = f.agent(i);
            f.agents.push(agent);
        }
        wait_for("four Ready nodes", SETTLE, || {
            let nodes = f.json(&["get", "nodes"]);
            let ready = nodes["items"]
                .as_array()?
                .iter()
                .filter(|n| {
                    n["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
                .count();
            (ready == NODES).then_some(())
        });
        f
    }

    /// Starts node `i`'s agent (again: the same state directory and containerd namespace).
    fn agent(&self, i: usize) -> Proc {
        let n = node(i);
        let config = self.dir.path().join(format!("agent-{n}.toml"));
        std::fs::write(&config, &self.agent_toml).unwrap();
        let state = self.dir.path().join(format!("agent-{n}"));
        Proc::agent(
            &AgentArgs {
                config: &config,
                node: &n,
                kubeconfig: &self.kubeconfig,
                socket: &self.ctd.socket,
                namespace: &format!("ns-{n}"),
                state_dir: &state,
            },
            self.dir
                .path()
                .join(format!("agent-{n}-{:x}.log", rand::random::<u32>())),
        )
    }

    fn kubectl_with(&self, kubectl: &Path, args: &[&str]) -> Output {
        Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(common::kubectl(), args)
    }

    fn ok_with(&self, kubectl: &Path, args: &[&str]) -> String {
        let out = self.kubectl_with(kubectl, args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(common::kubectl(), args)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    fn apply(&self, yaml: &str) {
        let f = self
            .dir
            .path()
            .join(format!("rs-{:x}.yaml", rand::random::<u32>()));
        std::fs::write(&f, yaml).unwrap();
        self.ok(&["apply", "-f", f.to_str().unwrap()]);
    }

    /// The pods of `selector` not being deleted: name -> (node, phase).
    fn pods(&self, selector: &str) -> BTreeMap<String, (String, String)> {
        let pods = self.json(&["get", "pods", "-l", selector]);
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    (
                        p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                        p["status"]["phase"].as_str().unwrap_or("").to_string(),
                    ),
                )
            })
            .collect()
    }

    /// Waits until `n` pods of `selector` run, none terminating, and returns them.
    fn wait_running(&self, selector: &str, n: usize) -> BTreeMap<String, (String, String)> {
        let mut tries = 0;
        wait_for(&format!("{n} running pods of {selector}"), SETTLE, || {
            let all = self.json(&["get", "pods", "-l", selector]);
            let items = all["items"].as_array()?;
            let pods = self.pods(selector);
            tries += 1;
            if tries % 40 == 0 {
                eprintln!("waiting for {n} running pods of {selector}: {pods:?}");
            }
            (items.len() == n && pods.len() == n && pods.values().all(|(_, ph)| ph == "Running"))
                .then_some(pods)
        })
    }

    /// The pod names whose containers run, per node, read from containerd.
    fn running_in_containerd(&self) -> BTreeMap<String, BTreeSet<String>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut out: BTreeMap<String, BTreeSet<String>> =
                (0..NODES).map(|i| (node(i), BTreeSet::new())).collect();
            for c in containerd_pods(&connect_all(&self.ctd.socket).await).await {
                if c.running {
                    out.get_mut(&c.node).unwrap().insert(c.pod);
                }
            }
            out
        })
    }

    /// Waits until containerd runs exactly `pods` (by name) among the pods named `prefix-*`.
    fn wait_containerd(&self, prefix: &str, pods: &BTreeSet<String>) {
        wait_for(
            &format!("containerd to run exactly {pods:?}"),
            SETTLE,
            || {
                let running: BTreeSet<String> = self
                    .running_in_containerd()
                    .into_values()
                    .flatten()
                    .filter(|p| p.starts_with(prefix))
                    .collect();
                (running == *pods).then_some(())
            },
        );
    }
}

/// One container in containerd, with the pod identity the agent labelled it with.
#[derive(Debug, Clone)]
struct CtdContainer {
    node: String,
    pod: String,
    uid: String,
    container: String,
    id: String,
    running: bool,
}

/// A client of every node's containerd namespace.
async fn connect_all(socket: &Path) -> Vec<(String, Ctd)> {
    let mut out = Vec::new();
    for i in 0..NODES {
        let n = node(i);
        let c = Ctd::connect(socket, &format!("ns-{n}")).await.unwrap();
        out.push((n, c));
    }
    out
}

/// Every pod container of every node, asked of all nodes at once (one moment per sample).
async fn containerd_pods(nodes: &[(String, Ctd)]) -> Vec<CtdContainer> {
    use daemonset_agent::runtime::labels::{CONTAINER_NAME, POD_NAME, POD_UID};
    let per_node = nodes.iter().map(|(n, c)| async move {
        let tasks = c
            .tasks()
            .list(c.req(ListTasksRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .tasks;
        let running: BTreeSet<String> = tasks
            .iter()
            .filter(|t| t.status == containerd_client::types::v1::Status::Running as i32)
            .map(|t| t.id.clone())
            .collect();
        let containers = c
            .containers()
            .list(c.req(Default::default()))
            .await
            .unwrap()
            .into_inner()
            .containers;
        containers
            .into_iter()
            .filter_map(|c| {
                Some(CtdContainer {
                    node: n.clone(),
                    pod: c.labels.get(POD_NAME)?.clone(),
                    uid: c.labels.get(POD_UID)?.clone(),
                    container: c.labels.get(CONTAINER_NAME)?.clone(),
                    running: running.contains(&c.id),
                    id: c.id,
                })
            })
            .collect::<Vec<_>>()
    });
    futures::future::join_all(per_node)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The guide's ReplicaSet example, its image from the loopback registry and a command that
/// runs until stopped.
fn app_replica(replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: app-replica
  labels:
    app: my-app
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: my-app
  template:
    metadata:
      labels:
        app: my-app
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: app-container
        image: {reg}/busybox:v1
        command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
        resources:
          limits:
            memory: "200Mi"
            cpu: "100m"
"#,
        reg = common::registry()
    )
}

fn other_rs(name: &str, replicas: u32, spec_extra: &str, resources: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 2
{spec_extra}      containers:
      - name: c
        image: {reg}/busybox:v1
        command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
{resources}"#,
        reg = common::registry()
    )
}

fn nodes_of(pods: &BTreeMap<String, (String, String)>) -> Vec<String> {
    pods.values().map(|(n, _)| n.clone()).collect()
}

#[test]
fn replicasets_place_scale_restrict_and_replace() {
    let f = Fleet::start();
    let k127 = common::kubectl_release("1.27");

    // the guide's example: 3 replicas on 3 distinct nodes, running in containerd
    f.apply(&app_replica(3));
    let three = f.wait_running("app=my-app", 3);
    let distinct: BTreeSet<String> = nodes_of(&three).into_iter().collect();
    assert_eq!(distinct.len(), 3, "one replica per node: {three:?}");
    f.wait_containerd("app-replica-", &three.keys().cloned().collect());
    let table = f.ok(&["get", "rs", "app-replica"]);
    assert!(
        table.starts_with("NAME") && table.contains("DESIRED") && table.contains("READY"),
        "{table}"
    );
    let wide = f.ok(&["get", "rs", "app-replica", "-o", "wide"]);
    assert!(
        wide.contains("app-container") && wide.contains("app=my-app"),
        "{wide}"
    );

    // kubectl 1.27 scales up to 5: every node gets one before any gets two
    f.ok_with(&k127, &["scale", "rs/app-replica", "--replicas=5"]);
    let five = f.wait_running("app=my-app", 5);
    let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, (n, _)) in &five {
        per_node.entry(n.clone()).or_default().push(name.clone());
    }
    assert_eq!(per_node.len(), NODES, "spread over every node: {five:?}");
    let doubled: Vec<String> = per_node
        .values()
        .find(|v| v.len() == 2)
        .cloned()
        .expect("one node runs two");
    let rs = f.json(&["get", "rs", "app-replica"]);
    wait_for("the status to count 5 ready", SETTLE, || {
        let rs = f.json(&["get", "rs", "app-replica"]);
        (rs["status"]["readyReplicas"] == 5 && rs["status"]["fullyLabeledReplicas"] == 5)
            .then_some(())
    });
    assert_eq!(rs["spec"]["replicas"], 5);

    // the newest kubectl scales down to 2: the doubled-up pods go first, then the most
    // recently ready; the oldest survive, and their containers are all that run
    f.ok(&["scale", "rs/app-replica", "--replicas=2"]);
    let two = f.wait_running("app=my-app", 2);
    for gone in &doubled {
        assert!(
            !two.contains_key(gone),
            "the doubled-up {gone} survived: {two:?}"
        );
    }
    // (then, with LogarithmicScaleDown, the most recently ready by power-of-two age bucket:
    // the survivors are not always the oldest, but never two on one node)
    let survivors: BTreeSet<String> = nodes_of(&two).into_iter().collect();
    assert_eq!(survivors.len(), 2, "on distinct nodes: {two:?}");
    f.wait_containerd("app-replica-", &two.keys().cloned().collect());

    // scaling is authorized as `replicasets/scale`: a view token is refused, naming it
    let token = Command::new(env!("CARGO_BIN_EXE_daemonset-agent"))
        .args(["token", "create", "--role", "view", "--kubeconfig"])
        .arg(&f.kubeconfig)
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let refused = f.kubectl(&["--token", &token, "scale", "rs/app-replica", "--replicas=3"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("\"replicasets/scale\""),
        "{stderr}"
    );
    let read = f.kubectl(&[
        "--token",
        &token,
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/replicasets/app-replica/scale",
    ]);
    assert!(read.status.success(), "a viewer reads the Scale: {read:?}");

    // a deleted pod is replaced (a new name), its containers stopped
    let victim = two.keys().next().unwrap().clone();
    f.ok(&["delete", "pod", &victim, "--wait=false"]);
    let replaced = wait_for("a replacement pod", SETTLE, || {
        let pods = f.wait_running("app=my-app", 2);
        (!pods.contains_key(&victim)).then_some(pods)
    });
    f.wait_containerd("app-replica-", &replaced.keys().cloned().collect());

    // a nodeSelector restricts placement to the labelled node
    f.ok(&["label", "node", "r3", "disk=ssd"]);
    f.apply(&other_rs(
        "pinned",
        2,
        "      nodeSelector: {disk: ssd}\n",
        "",
    ));
    let pinned = f.wait_running("app=pinned", 2);
    assert_eq!(nodes_of(&pinned), ["r3", "r3"], "{pinned:?}");

    // requests beyond every node's memory: Pending, with the scheduler's message
    f.apply(&other_rs(
        "huge",
        1,
        "",
        "        resources: {requests: {memory: 1000Ti}}\n",
    ));
    let message = wait_for("the pod to be unschedulable", SETTLE, || {
        let pods = f.json(&["get", "pods", "-l", "app=huge"]);
        let pod = pods["items"].as_array()?.first()?.clone();
        let c = pod["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")?
            .clone();
        assert_eq!(pod["status"]["phase"], "Pending");
        assert!(pod["spec"]["nodeName"].is_null());
        Some(c["message"].as_str().unwrap_or("").to_string())
    });
    assert_eq!(message, "0/4 nodes are available: 4 Insufficient memory.");
}

/// How long the healing test's server waits on a silent node (`--node-monitor-grace-period`) and
/// lets its pods tolerate the unreachable taint (`--default-unreachable-toleration-seconds`).
const MONITOR_GRACE_S: u64 = 4;
const TOLERATION_S: u64 = 3;

#[test]
fn a_lost_nodes_replica_moves_and_its_return_duplicates_nothing() {
    let mut f = Fleet::start_with(
        &[
            "--node-monitor-grace-period",
            &format!("{MONITOR_GRACE_S}s"),
            "--default-unreachable-toleration-seconds",
            &TOLERATION_S.to_string(),
        ],
        &format!("node-lease-duration-seconds = {MONITOR_GRACE_S}\n"),
    );
    f.apply(&app_replica(3));
    let three = f.wait_running("app=my-app", 3);
    f.wait_containerd("app-replica-", &three.keys().cloned().collect());
    let (lost, (lost_node, _)) = three.iter().next().unwrap();
    let pod = f.json(&["get", "pod", lost]);
    let stale_uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let unreachable = pod["spec"]["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "node.kubernetes.io/unreachable")
        .cloned()
        .unwrap();
    assert_eq!(
        unreachable["tolerationSeconds"], TOLERATION_S,
        "the server's default toleration: {unreachable}"
    );
    let i: usize = lost_node[1..].parse().unwrap();

    // the node is lost: its agent dies (its containers do not)
    let killed = std::time::Instant::now();
    f.agents[i].kill();
    let replaced = wait_for("a replacement on another node", SETTLE, || {
        let pods = f.pods("app=my-app");
        (pods.len() == 3 && !pods.contains_key(lost) && pods.values().all(|(n, _)| !n.is_empty()))
            .then_some(pods)
    });
    let bound_in = killed.elapsed();
    for (n, _) in replaced.values() {
        assert_ne!(
            n, lost_node,
            "nothing is bound to the lost node: {replaced:?}"
        );
    }
    let budget = Duration::from_secs(MONITOR_GRACE_S + TOLERATION_S + 2);
    assert!(
        bound_in <= budget,
        "replacement bound {bound_in:?} after the kill, beyond grace + toleration (+2 s for the \
         controllers' passes): {budget:?}"
    );
    // (the lost pod stays Terminating while its node is away: counted out, as upstream's)
    let running = wait_for("the replacement running", SETTLE, || {
        let pods = f.pods("app=my-app");
        (pods.len() == 3 && pods.values().all(|(_, phase)| phase == "Running")).then_some(pods)
    });
    assert_eq!(
        running.keys().collect::<Vec<_>>(),
        replaced.keys().collect::<Vec<_>>()
    );
    let running_in = killed.elapsed();
    eprintln!("node lost -> replacement bound {bound_in:?}, running {running_in:?}");
    let terminating = f.json(&["get", "pod", lost]);
    assert!(
        !terminating["metadata"]["deletionTimestamp"].is_null(),
        "the lost pod is being deleted: {terminating}"
    );

    // the node returns: containerd is sampled every 100 ms from before the agent starts until
    // the stale pod is gone (and a while after), each sample asking all nodes at once
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let (stop, taken, socket) = (stop.clone(), taken.clone(), f.ctd.socket.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let nodes = connect_all(&socket).await;
                let mut samples = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    samples.push(containerd_pods(&nodes).await);
                    taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                samples
            })
        })
    };
    let back = f.agent(i);
    f.agents[i] = back;
    let returned = std::time::Instant::now();
    wait_for("the stale pod gone from the API", SETTLE, || {
        let out = f.kubectl(&["get", "pod", lost, "-o", "name"]);
        (!out.status.success()).then_some(())
    });
    let api_gone = returned.elapsed();
    wait_for("the stale pod's container stopped", SETTLE, || {
        let runs = f
            .running_in_containerd()
            .values()
            .any(|pods| pods.contains(lost));
        (!runs).then_some(())
    });
    // it does not come back: the agent's own sync passes after it (its pod watch resyncs and the
    // API's events) find nothing to start; watched across the replacement's next status write
    let stopped_in = returned.elapsed();
    wait_for("the node Ready again", SETTLE, || {
        let node = f.json(&["get", "node", lost_node]);
        node["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(())
    });
    f.wait_running("app=my-app", 3);
    f.wait_containerd("app-replica-", &replaced.keys().cloned().collect());
    // and 30 samples more (3 s or longer) with the agent running its sync loop
    let seen = taken.load(std::sync::atomic::Ordering::SeqCst);
    wait_for("30 more containerd samples", SETTLE, || {
        (taken.load(std::sync::atomic::Ordering::SeqCst) >= seen + 30).then_some(())
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let samples = sampler.join().unwrap();
    eprintln!(
        "node back -> stale pod deleted from the API {api_gone:?}, its container stopped \
         {stopped_in:?}; {} containerd samples",
        samples.len()
    );
    assert!(samples.len() >= 30, "{} samples", samples.len());
    let mut stale_ran_until = None;
    for (k, sample) in samples.iter().enumerate() {
        let mut per_identity: BTreeMap<(String, String, String), usize> = BTreeMap::new();
        for c in sample.iter().filter(|c| c.pod.starts_with("app-replica-")) {
            *per_identity
                .entry((c.pod.clone(), c.uid.clone(), c.container.clone()))
                .or_default() += 1;
        }
        for (id, n) in &per_identity {
            assert_eq!(*n, 1, "sample {k}: {n} containers of {id:?}: {sample:?}");
        }
        let running: BTreeSet<&str> = sample
            .iter()
            .filter(|c| c.running && c.pod.starts_with("app-replica-"))
            .map(|c| c.pod.as_str())
            .collect();
        for pod in &running {
            assert!(
                *pod == lost.as_str() || replaced.contains_key(*pod),
                "sample {k}: {pod} runs, neither the stale pod nor a replica: {sample:?}"
            );
        }
        let stale = sample
            .iter()
            .any(|c| c.running && c.uid == stale_uid && c.node == *lost_node);
        if stale {
            let contiguous = match stale_ran_until {
                None => k == 0,
                Some(last) => last + 1 == k,
            };
            assert!(
                contiguous,
                "sample {k}: the stale pod runs, but did not run in the sample before (last seen \
                 in sample {stale_ran_until:?}): it came back"
            );
            stale_ran_until = Some(k);
        }
    }
    assert!(
        stale_ran_until.is_some_and(|last| last + 1 < samples.len()),
        "the stale pod ran in the first samples and stopped before the last: {stale_ran_until:?} \
         of {}",
        samples.len()
    );
}

/// Container ids of running pod containers whose pod name starts with `prefix`: pod -> ids.
fn container_ids(f: &Fleet, prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let nodes = connect_all(&f.ctd.socket).await;
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for c in containerd_pods(&nodes).await {
            if c.running && c.pod.starts_with(prefix) {
                out.entry(c.pod).or_default().insert(c.id);
            }
        }
        out
    })
}

/// `kubectl delete rs` with each propagation policy, by kubectl 1.27 and the newest, as
/// Kubernetes does it: background (the ReplicaSet goes at once, its pods and their containers
/// after it), foreground (the ReplicaSet stays, marked `foregroundDeletion`, until its pods are
/// gone), orphan (the pods and their very containers stay, their ownerReferences removed).
#[test]
fn delete_rs_background_foreground_orphan() {
    let f = Fleet::start();
    let k127 = common::kubectl_release("1.27");
    let newest = common::kubectl().to_path_buf();
    for (v, kubectl) in [("127", &k127), ("new", &newest)] {
        let names = ["bg", "fg", "orphan"].map(|m| format!("del-{m}-{v}"));
        for name in &names {
            f.apply(&other_rs(name, 2, "", ""));
        }
        let mut running = BTreeMap::new();
        for name in &names {
            let pods = f.wait_running(&format!("app={name}"), 2);
            f.wait_containerd(&format!("{name}-"), &pods.keys().cloned().collect());
            running.insert(name.clone(), pods);
        }
        let [bg, fg, orphan] = &names;

        // background: the ReplicaSet is gone when kubectl returns; the collector deletes the
        // pods after it and their nodes stop the containers
        f.ok_with(kubectl, &["delete", "rs", bg, "--cascade=background"]);
        assert!(!f.kubectl(&["get", "rs", bg]).status.success(), "{bg} gone");
        wait_for(&format!("{bg}'s pods collected"), SETTLE, || {
            let all = f.json(&["get", "pods", "-l", &format!("app={bg}")]);
            all["items"].as_array()?.is_empty().then_some(())
        });
        f.wait_containerd(&format!("{bg}-"), &BTreeSet::new());

        // foreground: a finalizer of the test's holds one pod, so the ReplicaSet must wait for it
        let held = running[fg].keys().next().unwrap().clone();
        f.ok(&[
            "patch",
            "pod",
            &held,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
        ]);
        f.ok_with(
            kubectl,
            &["delete", "rs", fg, "--cascade=foreground", "--wait=false"],
        );
        // every container stops while the ReplicaSet still stands, marked
        f.wait_containerd(&format!("{fg}-"), &BTreeSet::new());
        let marked = f.json(&["get", "rs", fg]);
        assert!(
            marked["metadata"]["deletionTimestamp"].is_string(),
            "{marked}"
        );
        assert_eq!(
            marked["metadata"]["finalizers"],
            serde_json::json!(["foregroundDeletion"]),
            "{marked}"
        );
        let pod = f.json(&["get", "pod", &held]);
        assert!(pod["metadata"]["deletionTimestamp"].is_string(), "{pod}");
        f.ok(&[
            "patch",
            "pod",
            &held,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
        wait_for(&format!("{fg} gone after its pods"), SETTLE, || {
            (!f.kubectl(&["get", "rs", fg]).status.success()).then_some(())
        });
        let left = f.json(&["get", "pods", "-l", &format!("app={fg}")]);
        assert_eq!(left["items"], serde_json::json!([]), "its pods went first");

        // orphan: the pods stay, unowned, and their containers are the same ones
        let before = container_ids(&f, &format!("{orphan}-"));
        assert_eq!(before.len(), 2, "{before:?}");
        f.ok_with(kubectl, &["delete", "rs", orphan, "--cascade=orphan"]);
        assert!(!f.kubectl(&["get", "rs", orphan]).status.success());
        let pods = f.json(&["get", "pods", "-l", &format!("app={orphan}")]);
        let items = pods["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{pods}");
        for p in items {
            assert!(p["metadata"]["deletionTimestamp"].is_null(), "{p}");
            assert!(
                p["metadata"]["ownerReferences"]
                    .as_array()
                    .is_none_or(|o| o.is_empty()),
                "orphaned: {p}"
            );
        }
        assert_eq!(
            container_ids(&f, &format!("{orphan}-")),
            before,
            "the same containers run on"
        );
        f.ok(&[
            "delete",
            "pods",
            "-l",
            &format!("app={orphan}"),
            "--wait=false",
        ]);
        f.wait_containerd(&format!("{orphan}-"), &BTreeSet::new());
    }
}

/// Leader election with one real server (two need the etcd store): it acquires the Lease
/// `kube-system/daemonset-agent-controllers` and renews it; when another identity holds it (the
/// test writes and renews it), the server stops leading at its renew deadline and its
/// controllers stay idle (a new ReplicaSet gets no pod) until that Lease expires, then it takes
/// the Lease over (one more transition) and the ReplicaSet gets its pod.
#[test]
fn the_controllers_run_only_while_the_server_holds_the_lease() {
    let dir = tempfile::Builder::new()
        .prefix("dsa-le-")
        .tempdir_in("/tmp")
        .unwrap();
    let _guard = common::Guard::new().dir(dir.path());
    let data = dir.path().join("server");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let server = spawn(
        dir.path(),
        "server",
        &[
            "server",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
            "--leader-elect-lease-duration",
            "4s",
            "--leader-elect-renew-deadline",
            "3s",
            "--leader-elect-retry-period",
            "1s",
        ],
    );
    let kubeconfig = data.join("admin.kubeconfig");
    let kubectl = |args: &[&str]| {
        Command::new(common::kubectl())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    };
    let lease = || -> Option<Value> {
        let out = kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "daemonset-agent-controllers",
            "-o",
            "json",
        ]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    };
    let identity = wait_for("the server to lead", Duration::from_secs(30), || {
        let l = lease()?;
        Some(l["spec"]["holderIdentity"].as_str()?.to_string())
    });
    let kept = std::fs::read_to_string(data.join("leader-identity")).unwrap();
    assert_eq!(identity, kept.trim());
    let first = lease().unwrap();
    assert_eq!(first["spec"]["leaseDurationSeconds"], 4);
    let renewed = wait_for("a renewal", Duration::from_secs(10), || {
        let l = lease()?;
        (l["spec"]["renewTime"] != first["spec"]["renewTime"]).then_some(l)
    });
    assert_eq!(renewed["spec"]["acquireTime"], first["spec"]["acquireTime"]);
    let transitions = renewed["spec"]["leaseTransitions"].as_i64().unwrap();

    // another identity takes the Lease (as a second server would, with a 10 s lease: kubectl on
    // a loaded machine may take seconds per renewal) and renews it every 500 ms or so
    let other = |renew: &str| {
        let mut l = lease().unwrap();
        l["spec"]["holderIdentity"] = "other".into();
        l["spec"]["leaseDurationSeconds"] = 10.into();
        l["spec"]["renewTime"] = renew.into();
        l["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        let f = dir.path().join("lease.json");
        std::fs::write(&f, l.to_string()).unwrap();
        let out = kubectl(&["replace", "-f", f.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
    };
    let micro = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    // (on a loaded machine a 3 s renew deadline may pass on its own, and the server then leads
    // again at once: the stop that counts is the last one logged, after this write)
    let written = chrono::Utc::now().format("%H:%M:%S%.3f").to_string();
    other(&micro());
    wait_for(
        "the server to stop leading",
        Duration::from_secs(20),
        || {
            let log = server.log();
            let last = log.lines().rfind(|l| {
                l.contains("leadership lost") || l.contains("leading: controllers started")
            })?;
            (last.contains("leadership lost") && last[..12] >= written[..]).then_some(())
        },
    );
    let rs = other_rs("idle", 1, "", "");
    let f = dir.path().join("rs.yaml");
    std::fs::write(&f, rs).unwrap();
    assert!(kubectl(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    let pods = || {
        let out = kubectl(&["get", "pods", "-l", "app=idle", "-o", "name"]);
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    // 12 renewals by "other" over 6 s: the ReplicaSet stays without a pod
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(500));
        other(&micro());
        assert_eq!(pods(), 0, "a controller acted while another identity led");
    }
    assert_eq!(lease().unwrap()["spec"]["holderIdentity"], "other");
    // "other" stops renewing: the server takes over once its 10 s passed on the server's clock
    let stopped = std::time::Instant::now();
    let back = wait_for("the server to lead again", Duration::from_secs(40), || {
        let l = lease()?;
        (l["spec"]["holderIdentity"] == identity.as_str()).then_some(l)
    });
    let took = stopped.elapsed();
    assert!(took >= Duration::from_secs(8), "taken after {took:?}");
    assert_eq!(
        back["spec"]["leaseTransitions"].as_i64().unwrap(),
        transitions + 1
    );
    wait_for("the ReplicaSet's pod", Duration::from_secs(30), || {
        (pods() == 1).then_some(())
    });
}
