//! ReplicaSets across a fleet, with real parts only: the `daemonset-agent` binary as server and
//! as four agents (nodes r0..r3, each with its own containerd namespace on one real containerd +
//! runc), images from the loopback registry, kubectl 1.27 and the newest. What runs is read from
//! containerd itself (the running tasks of each node's namespace), not from the API under test.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::proc::Proc;
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
    _agents: Vec<Proc>,
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
        let ctd = Containerd::start();
        let dir = tempfile::Builder::new()
            .prefix("dsa-rs-")
            .tempdir_in("/tmp")
            .unwrap();
        let listen = format!("127.0.0.1:{}", common::free_port());
        let guard = common::Guard::new().containerd(&ctd).dir(dir.path());
        let data = dir.path().join("server");
        let server = spawn(
            dir.path(),
            "server",
            &[
                "server",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                &listen,
            ],
        );
        let kubeconfig = data.join("admin.kubeconfig");
        let mut f = Fleet {
            _guard: guard,
            dir,
            ctd,
            _server: server,
            kubeconfig,
            _agents: vec![],
        };
        wait_for("the server to answer", Duration::from_secs(20), || {
            (f.kubeconfig.exists() && f.kubectl(&["get", "--raw", "/readyz"]).status.success())
                .then_some(())
        });
        for i in 0..NODES {
            let n = node(i);
            let config = f.dir.path().join(format!("agent-{n}.toml"));
            std::fs::write(&config, "container-logs-to-journald = false\n").unwrap();
            let state = f.dir.path().join(format!("agent-{n}"));
            let agent = spawn(
                f.dir.path(),
                &format!("agent-{n}"),
                &[
                    "agent",
                    "--config",
                    config.to_str().unwrap(),
                    "--node-name",
                    &n,
                    "--kubeconfig",
                    f.kubeconfig.to_str().unwrap(),
                    "--containerd-socket",
                    f.ctd.socket.to_str().unwrap(),
                    "--containerd-namespace",
                    &format!("ns-{n}"),
                    "--state-dir",
                    state.to_str().unwrap(),
                ],
            );
            f._agents.push(agent);
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
        wait_for(&format!("{n} running pods of {selector}"), SETTLE, || {
            let all = self.json(&["get", "pods", "-l", selector]);
            let items = all["items"].as_array()?;
            let pods = self.pods(selector);
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
            let mut out = BTreeMap::new();
            for i in 0..NODES {
                let c = Ctd::connect(&self.ctd.socket, &format!("ns-{}", node(i)))
                    .await
                    .unwrap();
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
                let pods: BTreeSet<String> = containers
                    .iter()
                    .filter(|c| running.contains(&c.id))
                    .filter_map(|c| {
                        c.labels
                            .get(daemonset_agent::runtime::labels::POD_NAME)
                            .cloned()
                    })
                    .collect();
                out.insert(node(i), pods);
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
    for kept in two.keys() {
        assert!(
            three.contains_key(kept),
            "{kept} is not one of the first three: {three:?}"
        );
    }
    f.wait_containerd("app-replica-", &two.keys().cloned().collect());

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
