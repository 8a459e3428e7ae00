//! Node health end to end, with real parts only: the `daemonset-agent` binary as server (node
//! monitor grace period 4 s) and as two agents (node-a, node-b: own containerd namespaces on one
//! real containerd + runc, Leases of 4 s renewed every second), a DaemonSet from the loopback
//! registry, the real kubectl. containerd is sampled with `ctr` every 100 ms, independently of
//! the API under test.
//!
//! A bare pod tolerating unreachable for 2 s is evicted meanwhile; the DaemonSet's pod is not.
//!
//! Why the waits are enough: a frozen agent's Lease was renewed at most 1 s before the freeze,
//! so the controller marks its node at most 4 s (+ one write) after it; the waits allow 30 s,
//! for a loaded 2-core machine. A thawed agent renews at once, sees its node Unknown through its
//! watch and posts Ready, and its pods' statuses follow within a round: 30 s as well. A deleted
//! Node is seen through the agent's watch of its Node and registered again at once: 10 s.
mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proc::Proc;
use common::{wait_for, Containerd};
use serde_json::Value;

struct Cluster {
    /// First, so it drops first: removes everything the test made, pass or fail.
    _guard: common::Guard,
    dir: tempfile::TempDir,
    ctd: Containerd,
    server: Proc,
    kubeconfig: PathBuf,
    agents: Vec<(String, Proc)>,
}

impl Cluster {
    fn start(grace: &str) -> Cluster {
        let ctd = Containerd::start();
        let dir = tempfile::Builder::new()
            .prefix("dsa-nodehealth-")
            .tempdir_in("/tmp")
            .unwrap();
        let data = dir.path().join("server");
        let listen = format!("127.0.0.1:{}", common::free_port());
        let server = Proc::spawn(
            &[
                "server",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                &listen,
                "--node-monitor-grace-period",
                grace,
            ],
            dir.path().join("server.log"),
        );
        let c = Cluster {
            _guard: common::Guard::new().containerd(&ctd).dir(dir.path()),
            kubeconfig: data.join("admin.kubeconfig"),
            dir,
            ctd,
            server,
            agents: vec![],
        };
        wait_for("the server to answer", Duration::from_secs(20), || {
            (c.kubeconfig.exists() && c.kubectl(&["get", "--raw", "/readyz"]).status.success())
                .then_some(())
        });
        c
    }

    fn start_agent(&mut self, node: &str) {
        let config = self.dir.path().join(format!("agent-{node}.toml"));
        std::fs::write(
            &config,
            "container-logs-to-journald = false\nnode-lease-duration-seconds = 4\n",
        )
        .unwrap();
        let state = self.dir.path().join(format!("agent-{node}"));
        let ns = format!("ns-{node}");
        let args = [
            "agent",
            "--config",
            config.to_str().unwrap(),
            "--node-name",
            node,
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap(),
            "--containerd-socket",
            self.ctd.socket.to_str().unwrap(),
            "--containerd-namespace",
            &ns,
            "--state-dir",
            state.to_str().unwrap(),
        ];
        let p = Proc::spawn(&args, self.dir.path().join(format!("agent-{node}.log")));
        self.agents.push((node.to_string(), p));
    }

    fn agent(&self, node: &str) -> &Proc {
        &self.agents.iter().find(|(n, _)| n == node).unwrap().1
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(common::kubectl())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `kubectl get ARGS -o json`, None when it fails (the object is not there).
    fn get(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&all);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    fn node(&self, name: &str) -> Option<Value> {
        self.get(&["node", name])
    }

    /// The DaemonSet's pod bound to `node`.
    fn pod_on(&self, node: &str) -> Option<Value> {
        let list = self.get(&["pods", "-l", "app=hb"])?;
        list["items"]
            .as_array()?
            .iter()
            .find(|p| p["spec"]["nodeName"] == node)
            .cloned()
    }

    fn number_ready(&self) -> Option<i64> {
        self.get(&["ds", "hb"])?["status"]["numberReady"].as_i64()
    }

    /// The running task of the DaemonSet's pod in `node`'s namespace: (container id, pid), as
    /// containerd has it (a restart changes both: the id carries the restart count).
    fn task(socket: &std::path::Path, node: &str) -> Option<(String, String)> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["-n", &format!("ns-{node}"), "tasks", "ls"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && f[2] == "RUNNING" && f[0].starts_with("default_hb-"))
            .map(|f| (f[0].to_string(), f[1].to_string()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (n, p) in &self.agents {
                eprintln!("--- agent {n} ---\n{}", p.log_tail(40));
            }
            eprintln!("--- server ---\n{}", self.server.log_tail(60));
        }
    }
}

/// The distinct (container id, pid) of running tasks containerd showed for one node.
type Tasks = BTreeSet<(String, String)>;

/// Every distinct (container id, pid) containerd showed for each node, sampled every 100 ms.
struct Sampler {
    seen: Arc<Mutex<Vec<Tasks>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(socket: PathBuf, nodes: &[&str]) -> Sampler {
        let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        let seen = Arc::new(Mutex::new(vec![BTreeSet::new(); nodes.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                for (i, n) in nodes.iter().enumerate() {
                    let task = Cluster::task(&socket, n);
                    s.lock().unwrap()[i].insert(task.unwrap_or_default());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Tasks> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}

fn ready_of(obj: &Value) -> (String, String) {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .unwrap_or_default()
}

fn taints_of(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap(),
                t["effect"].as_str().unwrap()
            )
        })
        .collect()
}

fn rfc3339_ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

const UNREACHABLE: [&str; 2] = [
    "node.kubernetes.io/unreachable:NoSchedule",
    "node.kubernetes.io/unreachable:NoExecute",
];

#[test]
fn a_frozen_agent_turns_its_node_unknown_and_back_without_restarts() {
    let registry = common::registry();
    let mut c = Cluster::start("4s");
    c.start_agent("node-a");
    c.start_agent("node-b");
    let ds = format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: hb\nspec:\n  selector:\n    matchLabels:\n      app: hb\n  template:\n    metadata:\n      labels:\n        app: hb\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: main\n        image: {registry}/busybox:v1\n"
    );
    let f = c.dir.path().join("hb.yaml");
    std::fs::write(&f, ds).unwrap();
    c.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_for("both pods ready", Duration::from_secs(90), || {
        (c.number_ready() == Some(2)).then_some(())
    });
    // a bare pod on node-a that tolerates unreachable for 2 s only (what a ReplicaSet's pod
    // relies on to leave a lost node)
    let bare = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: evictee\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 1\n  tolerations:\n  - key: node.kubernetes.io/unreachable\n    operator: Exists\n    effect: NoExecute\n    tolerationSeconds: 2\n  containers:\n  - name: main\n    image: {registry}/busybox:v1\n"
    );
    let f = c.dir.path().join("evictee.yaml");
    std::fs::write(&f, bare).unwrap();
    c.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_for("the bare pod ready", Duration::from_secs(60), || {
        c.get(&["pod", "evictee"])
            .filter(|p| ready_of(p).0 == "True")
    });
    let task_a = Cluster::task(&c.ctd.socket, "node-a").expect("node-a runs its pod");
    let task_b = Cluster::task(&c.ctd.socket, "node-b").expect("node-b runs its pod");
    let sampler = Sampler::start(c.ctd.socket.clone(), &["node-a", "node-b"]);

    // frozen: the Lease stops; Ready=Unknown, unreachable taints, the pod not ready
    c.agent("node-a").signal(libc::SIGSTOP);
    let frozen = Instant::now();
    let unknown = wait_for("node-a Ready=Unknown", Duration::from_secs(30), || {
        c.node("node-a").filter(|n| ready_of(n).0 == "Unknown")
    });
    let detected = frozen.elapsed();
    assert_eq!(ready_of(&unknown).1, "NodeStatusUnknown");
    let lease = c
        .get(&["lease", "-n", "kube-node-lease", "node-a"])
        .unwrap();
    let ready = unknown["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    let after_renewal =
        rfc3339_ms(&ready["lastTransitionTime"]) - rfc3339_ms(&lease["spec"]["renewTime"]);
    // the controller's own measure: how long it had not seen the agent when it marked the node
    let server_log = std::fs::read_to_string(&c.server.log_path).unwrap();
    let silent_ms: i64 = server_log
        .lines()
        .find(|l| l.contains("stopped posting status"))
        .and_then(|l| l.split("silent_ms=").nth(1))
        .and_then(|v| v.split(|ch: char| !ch.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .expect("the controller logs how long the node was silent");
    eprintln!(
        "NotReady detection: the controller marked node-a {silent_ms} ms after it last saw the \
         Lease renewed (grace period 4000 ms); kubectl saw Ready=Unknown {} ms after SIGSTOP; \
         lastTransitionTime - renewTime = {after_renewal} ms (whole seconds)",
        detected.as_millis()
    );
    assert!((4_000..5_000).contains(&silent_ms), "{silent_ms}");
    // lastTransitionTime has whole seconds, renewTime microseconds: up to 1 s less
    assert!(
        (3_000..6_000).contains(&after_renewal),
        "marked {after_renewal} ms after the last renewal"
    );
    let tainted = wait_for("node-a tainted", Duration::from_secs(10), || {
        c.node("node-a").filter(|n| {
            UNREACHABLE
                .iter()
                .all(|t| taints_of(n).contains(&t.to_string()))
        })
    });
    assert_eq!(taints_of(&tainted).len(), 2, "{tainted}");
    wait_for("node-a's pod not ready", Duration::from_secs(10), || {
        c.pod_on("node-a").filter(|p| ready_of(p).0 == "False")
    });
    wait_for("numberReady 1", Duration::from_secs(10), || {
        (c.number_ready() == Some(1)).then_some(())
    });
    // NoExecute: the bare pod goes once its 2 s ran out, the DaemonSet's pod stays
    let evicted = wait_for("the bare pod evicted", Duration::from_secs(10), || {
        c.get(&["pod", "evictee"])
            .filter(|p| p["metadata"]["deletionTimestamp"].is_string())
    });
    let taint_added = tainted["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["effect"] == "NoExecute")
        .map(|t| rfc3339_ms(&t["timeAdded"]))
        .unwrap();
    let after_taint = rfc3339_ms(&evicted["metadata"]["deletionTimestamp"])
        - evicted["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0)
            * 1000
        - taint_added;
    eprintln!("eviction: the bare pod was deleted {after_taint} ms after the NoExecute taint (tolerationSeconds 2, whole seconds)");
    assert!((1_000..4_000).contains(&after_taint), "{after_taint}");
    assert!(c.pod_on("node-a").unwrap()["metadata"]["deletionTimestamp"].is_null());
    let printed = c.kubectl_ok(&["get", "ds", "hb"]);
    let status = &c.get(&["ds", "hb"]).unwrap()["status"];
    eprintln!("while node-a is frozen:\n{printed}{status}");
    // as Kubernetes counts it: the unreachable NoSchedule taint takes the node out of the
    // desired ones, its pod counts as misscheduled
    assert_eq!(status["numberMisscheduled"], 1, "{status}");
    assert_eq!(status["numberAvailable"], 1, "{status}");
    let b = c.node("node-b").unwrap();
    assert_eq!(ready_of(&b).0, "True", "node-b untouched");
    assert!(taints_of(&b).is_empty());
    assert_eq!(ready_of(&c.pod_on("node-b").unwrap()).0, "True");

    // thawed: everything comes back from the agent's own reports
    c.agent("node-a").signal(libc::SIGCONT);
    let thawed = Instant::now();
    wait_for("node-a back", Duration::from_secs(30), || {
        c.node("node-a")
            .filter(|n| ready_of(n).0 == "True" && taints_of(n).is_empty())
    });
    let node_back = thawed.elapsed();
    wait_for("node-a's pod ready again", Duration::from_secs(30), || {
        c.pod_on("node-a").filter(|p| ready_of(p).0 == "True")
    });
    wait_for("numberReady 2 again", Duration::from_secs(30), || {
        (c.number_ready() == Some(2)).then_some(())
    });
    wait_for(
        "the evicted pod stopped and gone",
        Duration::from_secs(30),
        || c.get(&["pod", "evictee"]).is_none().then_some(()),
    );
    eprintln!(
        "recovery: node Ready and untainted {} ms after SIGCONT, pod and DaemonSet ready {} ms",
        node_back.as_millis(),
        thawed.elapsed().as_millis()
    );

    // what the node controller recorded, as `kubectl get events` shows it: the node's status
    // changes, its pods marked not ready, the bare pod's eviction
    let events_of = |name: &str, reason: &str| {
        let selector = format!("involvedObject.name={name},reason={reason}");
        c.get(&["events", "-A", "--field-selector", &selector])
            .and_then(|l| l["items"].as_array().cloned())
            .filter(|items| !items.is_empty())
    };
    let pod_a = c.pod_on("node-a").unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    for (name, reason, type_, message) in [
        (
            "node-a",
            "NodeNotReady",
            "Normal",
            "Node node-a status is now: NodeNotReady".to_string(),
        ),
        (
            "node-a",
            "NodeReady",
            "Normal",
            "Node node-a status is now: NodeReady".to_string(),
        ),
        (
            pod_a.as_str(),
            "NodeNotReady",
            "Warning",
            "Node is not ready".to_string(),
        ),
        (
            "evictee",
            "TaintManagerEviction",
            "Normal",
            "Marking for deletion Pod default/evictee".to_string(),
        ),
    ] {
        let items = wait_for(
            &format!("event {reason} about {name}"),
            Duration::from_secs(10),
            || events_of(name, reason),
        );
        assert_eq!(items.len(), 1, "recorded once: {items:?}");
        assert_eq!(items[0]["type"], type_, "{}", items[0]);
        assert_eq!(items[0]["message"], message.as_str(), "{}", items[0]);
    }
    assert!(
        events_of("node-b", "NodeNotReady").is_none(),
        "node-b stayed ready"
    );
    let printed = c.kubectl_ok(&["events", "-A", "--for", "node/node-a"]);
    assert!(printed.contains("NodeNotReady"), "{printed}");

    // deleted while its agent runs: registered again within seconds, its pod untouched
    let uid = c.node("node-a").unwrap()["metadata"]["uid"].clone();
    let pod = c.pod_on("node-a").unwrap()["metadata"]["uid"].clone();
    c.kubectl_ok(&["delete", "node", "node-a"]);
    let deleted = Instant::now();
    let again = wait_for("node-a registered again", Duration::from_secs(10), || {
        c.node("node-a")
            .filter(|n| n["metadata"]["uid"] != uid && ready_of(n).0 == "True")
    });
    eprintln!(
        "re-registration: {} ms after kubectl delete node",
        deleted.elapsed().as_millis()
    );
    assert!(taints_of(&again).is_empty());
    assert_eq!(c.pod_on("node-a").unwrap()["metadata"]["uid"], pod);
    wait_for(
        "numberReady 2 with the new node",
        Duration::from_secs(30),
        || (c.number_ready() == Some(2)).then_some(()),
    );

    let seen = sampler.finish();
    assert_eq!(
        seen[0],
        BTreeSet::from([task_a]),
        "node-a's container never restarted"
    );
    assert_eq!(
        seen[1],
        BTreeSet::from([task_b]),
        "node-b's container never restarted"
    );
}
