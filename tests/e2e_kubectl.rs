//! End to end, with real parts only: the `daemonset-agent` binary as server and as two agents
//! (worker-1 and edge-1, each with its own containerd namespace on one real containerd + runc),
//! images from a real loopback registry, and the real kubectl with default flags. containerd is
//! observed independently with `ctr` and the cgroup filesystem.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::proc::Proc;
use common::{wait_for, Containerd};
use daemonset_agent::agent::localapi::{self, pb};

const BIN: &str = env!("CARGO_BIN_EXE_daemonset-agent");

struct Cluster {
    /// First, so it drops first: removes everything below and all the test made, pass or fail.
    _guard: common::Guard,
    dir: tempfile::TempDir,
    ctd: Containerd,
    server: Proc,
    listen: String,
    kubeconfig: PathBuf,
    agents: Vec<(String, Proc)>,
}

impl Cluster {
    fn start() -> Cluster {
        let ctd = Containerd::start();
        let dir = tempfile::Builder::new()
            .prefix("dsa-e2e-")
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
            ],
            dir.path().join("server.log"),
        );
        let kubeconfig = data.join("admin.kubeconfig");
        let c = Cluster {
            _guard: common::Guard::new().containerd(&ctd).dir(dir.path()),
            dir,
            ctd,
            server,
            listen,
            kubeconfig,
            agents: vec![],
        };
        c.wait_ready();
        c
    }

    fn wait_ready(&self) {
        wait_for("the server to answer", Duration::from_secs(20), || {
            (self.kubeconfig.exists()
                && self.kubectl(&["get", "--raw", "/readyz"]).status.success())
            .then_some(())
        });
    }

    /// Starts the server again on the same data directory and address.
    fn start_server(&mut self) {
        let data = self.dir.path().join("server");
        self.server = Proc::spawn(
            &[
                "server",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                &self.listen,
            ],
            self.dir.path().join("server-2.log"),
        );
        self.wait_ready();
    }

    /// Starts an agent whose containers' output goes to their log files only (a test must not
    /// write into a journald the host may run).
    fn start_agent(&mut self, node: &str, labels: &[&str]) {
        self.start_agent_with(node, labels, "container-logs-to-journald = false\n");
    }

    fn state_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("agent-{node}"))
    }

    /// Starts an agent with `config` as its configuration file.
    fn start_agent_with(&mut self, node: &str, labels: &[&str], config: &str) {
        let ns = format!("ns-{node}");
        let state = self.state_dir(node);
        let config_file = self.dir.path().join(format!("agent-{node}.toml"));
        std::fs::write(&config_file, config).unwrap();
        let mut args = vec![
            "agent".to_string(),
            "--config".into(),
            config_file.to_string_lossy().into(),
            "--node-name".into(),
            node.into(),
            "--kubeconfig".into(),
            self.kubeconfig.to_string_lossy().into(),
            "--containerd-socket".into(),
            self.ctd.socket.to_string_lossy().into(),
            "--containerd-namespace".into(),
            ns,
            "--state-dir".into(),
            state.to_string_lossy().into(),
        ];
        for l in labels {
            args.push("--node-label".into());
            args.push(l.to_string());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = Proc::spawn(&argv, self.dir.path().join(format!("agent-{node}.log")));
        self.agents.retain(|(n, _)| n != node);
        self.agents.push((node.to_string(), p));
    }

    fn agent(&mut self, node: &str) -> &mut Proc {
        &mut self.agents.iter_mut().find(|(n, _)| n == node).unwrap().1
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
            "kubectl {args:?} failed: {}{}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.server
                .log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn apply(&self, yaml: &str) -> String {
        let f = self
            .dir
            .path()
            .join(format!("apply-{}.yaml", rand_suffix()));
        std::fs::write(&f, yaml).unwrap();
        self.kubectl_ok(&["apply", "-f", f.to_str().unwrap()])
    }

    /// Labels of a container, or None when it went away between the listing and this call (the
    /// agent replaces containers while the test watches).
    fn container_labels(&self, ns: &str, id: &str) -> Option<serde_json::Value> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.ctd.socket)
            .args(["-n", ns, "containers", "info", id])
            .output()
            .expect("run ctr");
        if !out.status.success() {
            return None;
        }
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        Some(info["Labels"].clone())
    }

    fn ctr(&self, ns: &str, args: &[&str]) -> String {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.ctd.socket)
            .arg("-n")
            .arg(ns)
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .expect("run ctr");
        assert!(out.status.success(), "ctr {args:?} failed");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Running tasks of a node: (container id, DaemonSet name).
    fn running(&self, node: &str) -> Vec<(String, String)> {
        let ns = format!("ns-{node}");
        let tasks = self.ctr(&ns, &["tasks", "ls"]);
        let mut out = vec![];
        for line in tasks.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 3 && f[2] == "RUNNING" {
                if let Some(labels) = self.container_labels(&ns, f[0]) {
                    let ds = labels["io.daemonset-agent.daemonset.name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    out.push((f[0].to_string(), ds));
                }
            }
        }
        out.sort();
        out
    }

    fn running_ds(&self, node: &str) -> Vec<String> {
        let mut v: Vec<String> = self.running(node).into_iter().map(|(_, d)| d).collect();
        v.sort();
        v
    }

    fn debug(&self) -> String {
        let mut s = String::new();
        for (n, p) in &self.agents {
            s.push_str(&format!("--- agent {n} ---\n"));
            s.push_str(
                &p.log()
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            s.push('\n');
        }
        s
    }

    fn wait_ds(&self, node: &str, want: &[&str], secs: u64) {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.running_ds(node);
            if got == want {
                return;
            }
            if std::time::Instant::now() > deadline {
                panic!("{node}: running {got:?}, want {want:?}\n{}", self.debug());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What `node`'s agent says through its local API now (None while it does not answer).
    fn local(&self, node: &str) -> Option<pb::ListPodsResponse> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = localapi::client(&self.state_dir(node)).await.ok()?;
            let r = c.list_pods(pb::ListPodsRequest {}).await.ok()?;
            Some(r.into_inner())
        })
    }

    /// Waits until `node`'s local API says what `f` looks for.
    fn wait_local<T>(
        &self,
        node: &str,
        what: &str,
        secs: u64,
        f: impl Fn(&pb::ListPodsResponse) -> Option<T>,
    ) -> T {
        wait_for(what, Duration::from_secs(secs), || {
            self.local(node).and_then(|r| f(&r))
        })
    }

    /// The pod of DaemonSet `ds` as `node`'s agent reports it: the round its worker last acted
    /// on, and its containers.
    fn local_pod(&self, node: &str, ds: &str) -> Option<pb::PodInfo> {
        self.local(node)?
            .pods
            .into_iter()
            .find(|p| p.daemonset == ds)
    }

    /// The creation time of a container, as containerd recorded it.
    fn created_at(&self, ns: &str, id: &str) -> chrono::DateTime<chrono::FixedOffset> {
        let out = self.ctr(ns, &["containers", "info", id]);
        let info: serde_json::Value = serde_json::from_str(&out).unwrap();
        chrono::DateTime::parse_from_rfc3339(info["CreatedAt"].as_str().unwrap()).unwrap()
    }
}

/// Checks `check` until `until`, failing at its first complaint: for a test that shows that
/// nothing happens, over a window its caller derives from what it observed (and says why).
fn watch_until(until: Instant, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    loop {
        if let Err(e) = check() {
            panic!("{what}: {e}");
        }
        if Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.debug());
            eprintln!("--- server ---\n{}", tail(&self.server.log(), 40));
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn rand_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A one-container DaemonSet; `container` is the YAML of the container's fields after `image`
/// (indented 8), `pod` extra pod spec fields (indented 6).
fn ds_yaml(name: &str, registry: &str, pod: &str, container: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      terminationGracePeriodSeconds: 2\n{pod}      containers:\n      - name: main\n        image: {registry}/busybox:v1\n{container}"
    )
}

fn guide(registry: &str) -> String {
    std::fs::read_to_string(common::repo_root().join("examples/daemonsets.yaml"))
        .unwrap()
        .replace("127.0.0.1:5000", registry)
}

fn read_cgroup(controller: &str, ns: &str, id: &str, file: &str) -> String {
    let p = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("daemonset-agent")
        .join(ns)
        .join(id)
        .join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn guide_daemonsets_follow_node_labels_updates_and_deletes() {
    let registry = common::registry();
    let mut c = Cluster::start();
    c.start_agent("worker-1", &["node-role.kubernetes.io/worker=true"]);
    c.start_agent("edge-1", &[]);
    wait_for("two nodes", Duration::from_secs(20), || {
        let out = c.kubectl_ok(&["get", "nodes", "--show-labels"]);
        (out.contains("worker-1") && out.contains("edge-1")).then_some(())
    });
    let nodes = c.kubectl_ok(&["get", "nodes", "--show-labels"]);
    assert!(
        nodes.contains("node-role.kubernetes.io/worker=true"),
        "{nodes}"
    );
    assert!(nodes.contains("kubernetes.io/hostname=edge-1"), "{nodes}");

    c.apply(&guide(registry));
    c.wait_ds("worker-1", &["kube-proxy", "node-monitor"], 60);
    // edge-1 is not a worker: the server's controller, once it synced both DaemonSets at the
    // generation the API has (their status says so: one node desired, worker-1), bound no pod to
    // it, and the agent runs only the pods bound to its node. A round of edge-1's agent saw both
    // DaemonSets and no pod of theirs there (its local API says so), so nothing was started.
    let generations: serde_json::Value =
        serde_json::from_str(&c.kubectl_ok(&["get", "ds", "-o", "json"])).unwrap();
    let mut want: Vec<(String, i64)> = generations["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let m = &d["metadata"];
            (
                m["name"].as_str().unwrap().to_string(),
                m["generation"].as_i64().unwrap(),
            )
        })
        .collect();
    want.sort();
    wait_for(
        "both DaemonSets synced at their generation, for worker-1 only",
        Duration::from_secs(30),
        || {
            let v: serde_json::Value =
                serde_json::from_str(&c.kubectl_ok(&["get", "ds", "-o", "json"])).ok()?;
            v["items"]
                .as_array()?
                .iter()
                .all(|d| {
                    d["status"]["observedGeneration"] == d["metadata"]["generation"]
                        && d["status"]["desiredNumberScheduled"] == 1
                })
                .then_some(())
        },
    );
    let on_edge = c.kubectl_ok(&[
        "get",
        "pods",
        "--field-selector",
        "spec.nodeName=edge-1",
        "-o",
        "name",
    ]);
    assert_eq!(on_edge.trim(), "", "no pod bound to edge-1");
    c.wait_local("edge-1", "edge-1 seeing both DaemonSets", 30, |l| {
        let seen: Vec<(String, i64)> = l
            .daemonsets
            .iter()
            .map(|d| (d.name.clone(), d.generation))
            .collect();
        (seen == want).then_some(())
    });
    let edge = c.local("edge-1").unwrap();
    assert!(edge.daemonsets.iter().all(|d| !d.runs_here), "{edge:?}");
    assert!(edge.pods.is_empty(), "{edge:?}");
    assert_eq!(
        c.running_ds("edge-1"),
        Vec::<String>::new(),
        "{}",
        c.debug()
    );

    // the limits reached the cgroup
    let (id, _) = c
        .running("worker-1")
        .into_iter()
        .find(|(_, ds)| ds == "node-monitor")
        .unwrap();
    assert_eq!(
        read_cgroup("memory", "ns-worker-1", &id, "memory.limit_in_bytes"),
        "209715200"
    );
    assert_eq!(
        read_cgroup("cpu", "ns-worker-1", &id, "cpu.cfs_quota_us"),
        "10000"
    );
    assert_eq!(
        read_cgroup("cpu", "ns-worker-1", &id, "cpu.cfs_period_us"),
        "100000"
    );

    // status tells the truth: pods on worker-1, DaemonSets 1/1
    wait_for("pods Running on worker-1", Duration::from_secs(30), || {
        let out = c.kubectl_ok(&["get", "pods", "-o", "wide"]);
        (out.matches("Running").count() == 2 && out.matches("worker-1").count() == 2).then_some(())
    });
    wait_for(
        "node-monitor status 1 ready",
        Duration::from_secs(30),
        || {
            let ds: serde_json::Value =
                serde_json::from_str(&c.kubectl_ok(&["get", "ds", "node-monitor", "-o", "json"]))
                    .unwrap();
            let s = &ds["status"];
            (s["desiredNumberScheduled"] == 1
                && s["numberReady"] == 1
                && s["currentNumberScheduled"] == 1)
                .then_some(())
        },
    );
    let table = c.kubectl_ok(&["get", "ds"]);
    assert!(
        table.contains("DESIRED") && table.contains("node-monitor"),
        "{table}"
    );

    // edge-1 becomes a worker: it runs both within seconds
    c.kubectl_ok(&[
        "label",
        "node",
        "edge-1",
        "node-role.kubernetes.io/worker=true",
    ]);
    c.wait_ds("edge-1", &["kube-proxy", "node-monitor"], 30);

    // a changed template replaces the pod on every node
    let before: Vec<String> = c
        .running("worker-1")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    c.apply(&guide(registry).replace("monitoring-agent:latest", "busybox:v2"));
    for node in ["worker-1", "edge-1"] {
        wait_for("node-monitor replaced", Duration::from_secs(60), || {
            let now = c.running(node);
            let monitor: Vec<&(String, String)> =
                now.iter().filter(|(_, d)| d == "node-monitor").collect();
            (monitor.len() == 1 && !before.contains(&monitor[0].0)).then_some(())
        });
    }
    let image = c.kubectl_ok(&[
        "get",
        "ds",
        "node-monitor",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert!(image.ends_with("busybox:v2"), "{image}");

    // the label goes away: edge-1 stops both promptly
    c.kubectl_ok(&["label", "node", "edge-1", "node-role.kubernetes.io/worker-"]);
    c.wait_ds("edge-1", &[], 45);

    // delete: every container, task and snapshot of it is gone
    c.kubectl_ok(&["delete", "ds", "node-monitor"]);
    c.wait_ds("worker-1", &["kube-proxy"], 45);
    for node in ["worker-1", "edge-1"] {
        let ns = format!("ns-{node}");
        wait_for(
            "node-monitor containers and snapshots gone",
            Duration::from_secs(30),
            || {
                let containers = c.ctr(&ns, &["containers", "ls", "-q"]);
                let gone = containers.lines().all(|id| {
                    c.container_labels(&ns, id).is_none_or(|labels| {
                        labels["io.daemonset-agent.daemonset.name"] != "node-monitor"
                    })
                });
                let snaps = c.ctr(&ns, &["snapshots", "ls"]);
                let snap_gone = !snaps.contains("node-monitor");
                let tasks = c.ctr(&ns, &["tasks", "ls"]);
                (gone && snap_gone && !tasks.contains("node-monitor")).then_some(())
            },
        );
    }
    wait_for(
        "node-monitor pods gone from the API",
        Duration::from_secs(30),
        || {
            let out = c.kubectl_ok(&["get", "pods"]);
            (!out.contains("node-monitor")).then_some(())
        },
    );
}

#[test]
fn broken_daemonset_is_reported_and_does_not_disturb_others() {
    let registry = common::registry();
    let mut c = Cluster::start();
    c.start_agent("node-a", &[]);
    let ds = |name: &str, image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: main\n        image: {image}\n"
        )
    };
    c.apply(&ds(
        "missing-image",
        &format!("{registry}/does-not-exist:v9"),
    ));
    c.apply(&ds("good", &format!("{registry}/busybox:v1")));
    c.wait_ds("node-a", &["good"], 60);
    wait_for(
        "the broken pod to report its image error",
        Duration::from_secs(40),
        || {
            let out = c.kubectl_ok(&["get", "pods", "-o", "json"]);
            (out.contains("ErrImagePull") || out.contains("ImagePullBackOff")).then_some(())
        },
    );
    // a crashing container is restarted and its restarts are counted
    c.apply(&ds("crasher", &format!("{registry}/busybox:v1")).replace(
        "        image:",
        "        command: [\"sh\", \"-c\", \"sleep 0.5; exit 3\"]\n        image:",
    ));
    wait_for(
        "crasher restarted at least once",
        Duration::from_secs(40),
        || {
            let out = c.kubectl_ok(&["get", "pods", "-o", "json"]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            v["items"].as_array().unwrap().iter().find_map(|p| {
                let name = p["metadata"]["name"].as_str()?;
                let st = &p["status"]["containerStatuses"][0];
                (name.starts_with("crasher-")
                    && st["restartCount"].as_i64()? >= 1
                    && st["lastState"]["terminated"]["exitCode"] == 3)
                    .then_some(())
            })
        },
    );
    // the good one was never restarted by all this
    let good = c.running("node-a");
    assert!(
        good.iter()
            .any(|(id, ds)| ds == "good" && id.ends_with("_0")),
        "{good:?}"
    );
}

/// A restarted agent adopts what runs and restarts nothing; a container it finds waiting out
/// its crash-loop back-off waits the rest of it (rebuilt from containerd's record), instead of
/// being restarted at once.
#[test]
fn restarted_agent_adopts_running_containers() {
    let registry = common::registry();
    let mut c = Cluster::start();
    c.start_agent("node-b", &[]);
    c.apply(&ds_yaml("keeper", registry, "", ""));
    c.apply(&ds_yaml(
        "crasher",
        registry,
        "",
        "        command: [\"sh\", \"-c\", \"sleep 0.5; exit 3\"]\n",
    ));
    c.wait_ds("node-b", &["keeper"], 60);
    let keeper = |c: &Cluster| -> Vec<String> {
        let tasks = c.ctr("ns-node-b", &["tasks", "ls"]);
        let ids: Vec<String> = c
            .running("node-b")
            .into_iter()
            .filter(|(_, ds)| ds == "keeper")
            .map(|(id, _)| id)
            .collect();
        // each keeper task with its pid: the same pid is the same process
        tasks
            .lines()
            .filter(|l| ids.iter().any(|id| l.starts_with(id.as_str())))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let before = keeper(&c);
    assert_eq!(before.len(), 1, "{before:?}");
    // the crasher's first restart (at once) died: it waits out a 10 s back-off from its start
    c.wait_local("node-b", "the crasher in back-off", 60, |l| {
        let p = l.pods.iter().find(|p| p.daemonset == "crasher")?;
        let cs = p.containers.first()?;
        (cs.restart_count == 1 && cs.reason == "CrashLoopBackOff").then_some(())
    });
    let crasher_1 = c
        .ctr("ns-node-b", &["containers", "ls", "-q"])
        .lines()
        .find(|id| id.starts_with("default_crasher-") && id.ends_with("_1"))
        .expect("the crasher's incarnation 1")
        .to_string();
    let first_restart = c.created_at("ns-node-b", &crasher_1);
    c.agent("node-b").stop();
    // the agent has exited (stop waits for it): what runs now runs without it
    assert_eq!(keeper(&c), before);
    c.start_agent("node-b", &[]);
    // the keeper's worker reported the pod after acting on a listing of containerd made once the
    // API was in sync (a round numbered past the one running when the sync was seen): a restart
    // would have happened before that report
    let synced_at = c.wait_local("node-b", "the agent in sync", 30, |l| {
        l.api_synced.then_some(l.rounds)
    });
    wait_for("the keeper adopted", Duration::from_secs(30), || {
        c.local_pod("node-b", "keeper")
            .filter(|p| p.round > synced_at + 1)
    });
    assert_eq!(keeper(&c), before, "{}", c.debug());
    // the crasher's next incarnation came when the back-off ended, 10 s after the last start
    // (seconds are whole in containerd's record; the agent counts from the end of the second),
    // where an agent without the record restarted it at once
    let crasher_2 = crasher_1.trim_end_matches("_1").to_string() + "_2";
    wait_for("the crasher restarted", Duration::from_secs(30), || {
        c.ctr("ns-node-b", &["containers", "ls", "-q"])
            .lines()
            .any(|id| id == crasher_2)
            .then_some(())
    });
    let waited = c.created_at("ns-node-b", &crasher_2) - first_restart;
    assert!(
        waited >= chrono::Duration::milliseconds(9_900),
        "restarted {waited} after the last restart\n{}",
        c.debug()
    );
}

/// `kubectl delete pod` of a DaemonSet's pod, as with Kubernetes: the pod shows Terminating while
/// its node stops it within its grace period (this container takes 3 s to stop after SIGTERM; its
/// grace period is 30 s), no other pod of the DaemonSet comes to the node meanwhile, and once its
/// agent deleted it a new Pod (new name, new uid) runs there. Then a plain `kubectl delete pod`,
/// which waits for the pod to be gone, and the same again.
#[test]
fn deleted_daemonset_pods_terminate_gracefully_and_are_replaced() {
    let registry = common::registry();
    let mut c = Cluster::start();
    c.start_agent("node-t", &[]);
    c.apply(
        &ds_yaml(
            "stopper",
            registry,
            "",
            "        command: [\"sh\", \"-c\", \"trap 'sleep 3; exit 0' TERM; sleep 3600 & wait\"]\n",
        )
        .replace(
            "terminationGracePeriodSeconds: 2",
            "terminationGracePeriodSeconds: 30",
        ),
    );
    c.wait_ds("node-t", &["stopper"], 60);
    let pods = |c: &Cluster| -> Vec<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_str(&c.kubectl_ok(&["get", "pods", "-o", "json"])).unwrap();
        v["items"].as_array().unwrap().clone()
    };
    let id_of = |p: &serde_json::Value| -> (String, String) {
        let m = &p["metadata"];
        (
            m["name"].as_str().unwrap().to_string(),
            m["uid"].as_str().unwrap().to_string(),
        )
    };
    let running_pod = |c: &Cluster, not: &str| {
        wait_for(
            "a new pod of stopper running",
            Duration::from_secs(60),
            || {
                let p = pod_of(c, "stopper")?;
                (p["metadata"]["uid"] != not && is_running(container_status(&p, 0))).then_some(p)
            },
        )
    };
    let first = pod_of(&c, "stopper").unwrap();
    let (name, uid) = id_of(&first);
    let (container, _) = c.running("node-t").remove(0);

    let t0 = Instant::now();
    c.kubectl_ok(&["delete", "pod", &name, "--wait=false"]);
    let row = wait_for("the pod Terminating", Duration::from_secs(10), || {
        let out = c.kubectl_ok(&["get", "pods"]);
        let row = out.lines().find(|l| l.starts_with(&name))?.to_string();
        (row.split_whitespace().nth(2) == Some("Terminating")).then_some(row)
    });
    // its container still runs its 3 s of stopping, and the node gets no second pod meanwhile
    assert!(
        c.running("node-t").iter().any(|(id, _)| *id == container),
        "{row}\n{}",
        c.debug()
    );
    assert_eq!(pods(&c).len(), 1, "a terminating pod occupies its node");
    wait_for("the pod gone from the API", Duration::from_secs(40), || {
        (!pods(&c)
            .iter()
            .any(|p| p["metadata"]["uid"] == uid.as_str()))
        .then_some(())
    });
    assert!(
        t0.elapsed() >= Duration::from_secs(3),
        "stopped in {:?}: not within its grace period",
        t0.elapsed()
    );
    let containers = c.ctr("ns-node-t", &["containers", "ls", "-q"]);
    assert!(!containers.contains(&container), "{containers}");
    let second = running_pod(&c, &uid);
    let (name2, uid2) = id_of(&second);
    assert_ne!(name2, name, "a new pod has a new name");
    assert_eq!(second["spec"]["nodeName"], "node-t");

    // a plain delete waits until the agent deleted the pod
    let t0 = Instant::now();
    c.kubectl_ok(&["delete", "pod", &name2]);
    assert!(t0.elapsed() >= Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(!pods(&c)
        .iter()
        .any(|p| p["metadata"]["uid"] == uid2.as_str()));
    let third = running_pod(&c, &uid2);
    assert_ne!(id_of(&third).0, name2);
    wait_for("one container of stopper", Duration::from_secs(30), || {
        (c.running_ds("node-t") == ["stopper"]).then_some(())
    });
}

/// One pod pipeline, as the kubelet's: a bare Pod bound with `spec.nodeName` (no DaemonSet, no
/// controller) runs on that node through the same path as a DaemonSet's pod: its container
/// carries the pod's name, namespace and uid, its status comes back Running; `kubectl delete pod`
/// stops it and the agent deletes it, and since nothing owns it nothing makes it again.
#[test]
fn a_bare_pod_bound_to_a_node_runs_there_and_goes_when_deleted() {
    let registry = common::registry();
    let mut c = Cluster::start();
    c.start_agent("node-b", &[]);
    c.start_agent("node-o", &[]);
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bare\nspec:\n  nodeName: node-b\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {registry}/busybox:v1\n    command: [\"sleep\", \"3600\"]\n"
    ));
    let pod = wait_for("the bare pod Running", Duration::from_secs(60), || {
        let out = c.kubectl_ok(&["get", "pod", "bare", "-o", "json"]);
        let p: serde_json::Value = serde_json::from_str(&out).unwrap();
        (p["status"]["phase"] == "Running" && is_running(container_status(&p, 0))).then_some(p)
    });
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let running = c.running("node-b");
    assert_eq!(running.len(), 1, "{running:?}\n{}", c.debug());
    let (id, owner) = &running[0];
    assert_eq!(owner, "", "a bare pod has no DaemonSet");
    let labels = c.container_labels("ns-node-b", id).unwrap();
    assert_eq!(labels["io.daemonset-agent.pod.name"], "bare", "{labels}");
    assert_eq!(
        labels["io.daemonset-agent.pod.namespace"], "default",
        "{labels}"
    );
    assert_eq!(
        labels["io.daemonset-agent.pod.uid"],
        uid.as_str(),
        "{labels}"
    );
    assert!(
        c.running("node-o").is_empty(),
        "a pod runs only where it is bound"
    );

    // a plain delete returns once the agent stopped the container and deleted the pod
    c.kubectl_ok(&["delete", "pod", "bare"]);
    let out = c.kubectl_ok(&["get", "pods", "-o", "name"]);
    assert_eq!(out.trim(), "", "nothing makes a bare pod again");
    let containers = c.ctr("ns-node-b", &["containers", "ls", "-q"]);
    assert!(!containers.contains(id.as_str()), "{containers}");
}

#[test]
fn agent_without_api_keeps_running_and_healing_from_its_cache() {
    let registry = common::registry();
    let mut c = Cluster::start();
    c.start_agent("node-c", &[]);
    c.apply(&ds_yaml("offline", registry, "", ""));
    c.wait_ds("node-c", &["offline"], 60);
    // the API goes away, and the agent restarts without it
    let before = c.running("node-c");
    c.server.stop();
    c.agent("node-c").stop();
    c.start_agent("node-c", &[]);
    // the agent, without the API, decided from its cache: the pod's worker reported it after
    // acting on the agent's first listing of containerd, and the container is the same one
    c.wait_local("node-c", "the pod adopted from the cache", 30, |l| {
        let p = l.pods.iter().find(|p| p.daemonset == "offline")?;
        (!l.api_synced && p.round >= 1).then_some(())
    });
    assert_eq!(c.running("node-c"), before, "{}", c.debug());
    // the container dies: the agent heals it from its cached desired state
    let (id, _) = c.running("node-c").remove(0);
    c.ctr("ns-node-c", &["tasks", "kill", "-s", "9", &id]);
    wait_for(
        "the container restarted offline",
        Duration::from_secs(20),
        || {
            let now = c.running("node-c");
            (now.len() == 1 && now[0].0.ends_with("_1")).then_some(())
        },
    );
    // the API comes back: the pod's status catches up
    c.start_server();
    wait_for("restartCount 1 reported", Duration::from_secs(30), || {
        let out = c.kubectl_ok(&[
            "get",
            "pods",
            "-o",
            "jsonpath={.items[*].status.containerStatuses[0].restartCount}",
        ]);
        (out.trim() == "1").then_some(())
    });
}

#[test]
fn restarted_containerd_neither_duplicates_nor_drops_containers() {
    let registry = common::registry();
    let mut c = Cluster::start();
    // a 2 s resync: containerd's restart gives the agent no event, so its rounds come from it
    c.start_agent_with(
        "node-d",
        &[],
        "container-logs-to-journald = false\nresync-seconds = 2\n",
    );
    c.apply(&ds_yaml("steady", registry, "", ""));
    c.wait_ds("node-d", &["steady"], 60);
    let before = c.running("node-d");
    let tasks_before = c.ctr("ns-node-d", &["tasks", "ls"]);

    // containerd restarts under the agent: the shim and the container keep running, and the
    // agent neither restarts nor duplicates it once containerd answers again
    c.ctd.restart();
    // two rounds complete after containerd answers again (the first may have listed it just
    // before it went), and the pod's worker acted on the second's listing: a restart or a
    // duplicate would have been made then
    let restarted_at = c.local("node-d").expect("the local API").rounds;
    wait_for(
        "two rounds after containerd's restart",
        Duration::from_secs(30),
        || {
            c.local_pod("node-d", "steady")
                .filter(|p| p.round >= restarted_at + 2)
        },
    );
    assert_eq!(c.running("node-d"), before, "{}", c.debug());
    assert_eq!(
        c.ctr("ns-node-d", &["tasks", "ls"]),
        tasks_before,
        "the task was restarted"
    );
    assert_eq!(
        c.ctr("ns-node-d", &["containers", "ls", "-q"])
            .lines()
            .count(),
        1,
        "one container, no duplicate"
    );

    // the agent's connection and exit subscription came back: a killed container is restarted
    let (id, _) = before[0].clone();
    c.ctr("ns-node-d", &["tasks", "kill", "-s", "9", &id]);
    wait_for(
        "the container restarted after containerd's restart",
        Duration::from_secs(30),
        || {
            let now = c.running("node-d");
            (now.len() == 1 && now[0].0.ends_with("_1")).then_some(())
        },
    );
    wait_for("restartCount 1 reported", Duration::from_secs(30), || {
        let out = c.kubectl_ok(&[
            "get",
            "pods",
            "-o",
            "jsonpath={.items[*].status.containerStatuses[0].restartCount}",
        ]);
        (out.trim() == "1").then_some(())
    });
    assert_eq!(
        c.ctr("ns-node-d", &["containers", "ls", "-q"])
            .lines()
            .count(),
        1,
        "the dead container was replaced, not kept beside the new one"
    );
}

/// Container output flows through the log driver beside containerd's shim: into journald (a
/// journald namespace of the test's own) with the pod's fields, and into the CRI-format log file,
/// also while the agent is stopped; `daemonset-agent logs` prints the lines without their prefix.
#[test]
fn container_output_reaches_journald_and_logs_while_the_agent_is_down() {
    let registry = common::registry();
    let journald = common::Journald::start();
    let mut c = Cluster::start();
    let config = format!("journald-socket = \"{}\"\n", journald.socket.display());
    c.start_agent_with("node-j", &[], &config);
    c.apply(&ds_yaml(
        "talker",
        registry,
        "",
        "        command: [\"sh\", \"-c\", \"i=0; while true; do i=$((i+1)); echo tick-$i; echo warn-$i >&2; sleep 0.1; done\"]\n",
    ));
    c.wait_ds("node-j", &["talker"], 60);
    let (id, _) = c.running("node-j").remove(0);
    let labels = c.container_labels("ns-node-j", &id).unwrap();
    let pod = labels["io.daemonset-agent.pod.name"]
        .as_str()
        .unwrap()
        .to_string();
    let last_tick = |entries: &[serde_json::Value]| -> u64 {
        entries
            .iter()
            .filter_map(|e| e["MESSAGE"].as_str()?.strip_prefix("tick-")?.parse().ok())
            .max()
            .unwrap_or(0)
    };
    let entries = wait_for("ticks in journald", Duration::from_secs(20), || {
        let e = journald.entries_where("CONTAINER_ID", &id);
        (last_tick(&e) >= 3).then_some(e)
    });
    for e in &entries {
        let msg = e["MESSAGE"].as_str().unwrap();
        let priority = if msg.starts_with("tick-") { "6" } else { "3" };
        assert!(msg.starts_with("tick-") || msg.starts_with("warn-"), "{e}");
        assert_eq!(e["PRIORITY"], priority, "{e}");
        for (k, v) in [
            ("SYSLOG_IDENTIFIER", "main"),
            ("CONTAINER_NAME", "main"),
            ("POD", pod.as_str()),
            ("NAMESPACE", "default"),
            ("DAEMONSET", "talker"),
            ("NODE", "node-j"),
        ] {
            assert_eq!(e[k], v, "{k} in {e}");
        }
    }

    // the agent stops: output goes on reaching journald and the file
    c.agent("node-j").stop();
    let before = last_tick(&journald.entries_where("CONTAINER_ID", &id));
    let during = wait_for(
        "five more ticks in journald without the agent",
        Duration::from_secs(20),
        || {
            let t = last_tick(&journald.entries_where("CONTAINER_ID", &id));
            (t >= before + 5).then_some(t)
        },
    );
    let log_dir = c.state_dir("node-j").join("logs");
    let pod_dir = std::fs::read_dir(&log_dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().contains(&pod))
        .expect("the pod's log directory")
        .path();
    let file = std::fs::read_to_string(pod_dir.join("main/0.log")).unwrap();
    assert!(
        file.contains(&format!(" stdout F tick-{during}\n")),
        "tick-{during} not in the CRI file"
    );

    // the agent comes back, adopts the container, and its CLI prints the lines without prefix
    c.start_agent_with("node-j", &[], &config);
    let state = c.state_dir("node-j");
    let out = wait_for("daemonset-agent logs", Duration::from_secs(20), || {
        let out = Command::new(BIN)
            .args(["logs", "--state-dir", state.to_str().unwrap(), &pod])
            .output()
            .unwrap();
        out.status.success().then_some(out.stdout)
    });
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains(&format!("\ntick-{during}\nwarn-{during}\n")),
        "{}",
        tail(&out, 10)
    );
    assert!(
        out.lines()
            .all(|l| l.starts_with("tick-") || l.starts_with("warn-")),
        "{}",
        tail(&out, 10)
    );
    let tail2 = Command::new(BIN)
        .args([
            "logs",
            "--state-dir",
            state.to_str().unwrap(),
            &pod,
            "--tail",
            "2",
            "--timestamps",
        ])
        .output()
        .unwrap();
    let tail2 = String::from_utf8(tail2.stdout).unwrap();
    let lines: Vec<&str> = tail2.lines().collect();
    assert_eq!(lines.len(), 2, "{tail2}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("20") && l.contains("Z ")),
        "{tail2}"
    );
    // followed: new lines arrive decoded as the driver appends them
    let mut follow = Command::new(BIN)
        .args([
            "logs",
            "--state-dir",
            state.to_str().unwrap(),
            &pod,
            "-f",
            "--tail",
            "1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().unwrap()));
    let mut seen = Vec::new();
    while seen.len() < 6 {
        seen.push(lines.next().expect("a followed line").unwrap());
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        seen.iter()
            .all(|l| l.starts_with("tick-") || l.starts_with("warn-")),
        "{seen:?}"
    );
    assert_eq!(
        c.running("node-j")[0].0,
        id,
        "the container was not restarted"
    );
}

// ---- probes: real exec (containerd Tasks.Exec), httpGet and tcpSocket inside the pod's netns ----

/// The pod of DaemonSet `ds` as the API has it.
fn pod_of(c: &Cluster, ds: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&c.kubectl_ok(&["get", "pods", "-o", "json"])).ok()?;
    v["items"]
        .as_array()?
        .iter()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{ds}-")))
        })
        .cloned()
}

fn container_status(pod: &serde_json::Value, i: usize) -> &serde_json::Value {
    &pod["status"]["containerStatuses"][i]
}

fn condition(pod: &serde_json::Value, t: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

fn is_running(cs: &serde_json::Value) -> bool {
    cs["state"]["running"].is_object()
}

#[test]
fn exec_readiness_probe_makes_the_pod_ready_and_counts_in_number_ready() {
    let registry = common::registry();
    let mut c = Cluster::start();
    c.start_agent("node-r", &[]);
    c.apply(&ds_yaml(
        "late",
        registry,
        "",
        "        command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 8; touch /tmp/ready; sleep 3600 & wait\"]\n        readinessProbe:\n          exec:\n            command: [\"test\", \"-f\", \"/tmp/ready\"]\n          periodSeconds: 1\n",
    ));
    // running but not ready, and the DaemonSet counts it scheduled but not ready
    wait_for("late running and NotReady", Duration::from_secs(60), || {
        let p = pod_of(&c, "late")?;
        let cs = container_status(&p, 0);
        let ds: serde_json::Value =
            serde_json::from_str(&c.kubectl_ok(&["get", "ds", "late", "-o", "json"])).ok()?;
        (is_running(cs)
            && cs["ready"] == false
            && cs["started"] == true
            && condition(&p, "Ready") == "False"
            && condition(&p, "ContainersReady") == "False"
            && ds["status"]["currentNumberScheduled"] == 1
            && ds["status"]["numberReady"] == 0
            && ds["status"]["numberAvailable"] == 0)
            .then_some(())
    });
    // the file appears: Ready, and numberReady 0 -> 1
    wait_for("late Ready", Duration::from_secs(30), || {
        let p = pod_of(&c, "late")?;
        (container_status(&p, 0)["ready"] == true && condition(&p, "Ready") == "True").then_some(())
    });
    wait_for("late numberReady 1", Duration::from_secs(30), || {
        let ds: serde_json::Value =
            serde_json::from_str(&c.kubectl_ok(&["get", "ds", "late", "-o", "json"])).ok()?;
        (ds["status"]["numberReady"] == 1 && ds["status"]["numberAvailable"] == 1).then_some(())
    });
    let table = c.kubectl_ok(&["get", "ds", "late"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    // NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE
    assert_eq!(&row[..6], ["late", "1", "1", "1", "1", "1"], "{table}");
    let pods = c.kubectl_ok(&["get", "pods"]);
    assert!(pods.contains("1/1"), "{pods}");
    // readiness never restarts anything
    let p = pod_of(&c, "late").unwrap();
    assert_eq!(container_status(&p, 0)["restartCount"], 0);
}

#[test]
fn failing_exec_liveness_probe_restarts_the_container() {
    let registry = common::registry();
    let mut c = Cluster::start();
    c.start_agent("node-l", &[]);
    // healthy for 3 s after each start, then the probe's file is gone
    c.apply(&ds_yaml(
        "sickly",
        registry,
        "",
        "        command: [\"sh\", \"-c\", \"touch /tmp/alive; (sleep 3; rm /tmp/alive) & trap 'exit 0' TERM; sleep 3600 & wait\"]\n        livenessProbe:\n          exec:\n            command: [\"test\", \"-f\", \"/tmp/alive\"]\n          periodSeconds: 1\n          failureThreshold: 2\n",
    ));
    let p = wait_for("sickly restarted", Duration::from_secs(60), || {
        let p = pod_of(&c, "sickly")?;
        let cs = container_status(&p, 0);
        (cs["restartCount"].as_i64()? >= 1
            && cs["lastState"]["terminated"].is_object()
            && is_running(cs))
        .then_some(p)
    });
    let cs = container_status(&p, 0);
    assert!(
        cs["lastState"]["terminated"]["finishedAt"].is_string(),
        "{cs}"
    );
    // containerd runs the next incarnation; the agent said why it killed the last one
    wait_for("incarnation _1 running", Duration::from_secs(20), || {
        c.running("node-l")
            .iter()
            .any(|(id, ds)| ds == "sickly" && id.ends_with("_1"))
            .then_some(())
    });
    let log = c.agent("node-l").log();
    assert!(log.contains("failed liveness probe"), "{}", tail(&log, 40));
    // and it keeps happening, with the kubelet's back-off between restarts
    wait_for("sickly restarted twice", Duration::from_secs(60), || {
        let p = pod_of(&c, "sickly")?;
        (container_status(&p, 0)["restartCount"].as_i64()? >= 2).then_some(())
    });
}

#[test]
fn http_and_tcp_probes_reach_into_the_pod_network_namespace() {
    let registry = common::registry();
    let mut c = Cluster::start();
    c.start_agent("node-h", &[]);
    // a port nothing on the host listens on: only the pod's own loopback answers there
    let port = common::free_port();
    c.apply(&ds_yaml(
        "web",
        registry,
        "",
        &format!(
            "        command: [\"sh\", \"-c\", \"mkdir -p /www; echo ok > /www/index.html; sleep 3; exec httpd -f -p {port} -h /www\"]\n        ports:\n        - name: http\n          containerPort: {port}\n        readinessProbe:\n          httpGet:\n            port: http\n            path: /index.html\n            httpHeaders:\n            - name: X-Probe\n              value: e2e\n          periodSeconds: 1\n        livenessProbe:\n          tcpSocket:\n            port: {port}\n          initialDelaySeconds: 6\n          periodSeconds: 1\n          failureThreshold: 2\n"
        ),
    ));
    // a tcpSocket readiness probe on a port nobody listens on inside its pod
    c.apply(&ds_yaml(
        "closed",
        registry,
        "",
        "        readinessProbe:\n          tcpSocket:\n            port: 9\n          periodSeconds: 1\n",
    ));
    // hostNetwork: the probe dials the node's own loopback
    let host_port = common::free_port();
    c.apply(&ds_yaml(
        "hostweb",
        registry,
        "      hostNetwork: true\n",
        &format!(
            "        command: [\"sh\", \"-c\", \"mkdir -p /tmp/www; echo ok > /tmp/www/index.html; exec httpd -f -p 127.0.0.1:{host_port} -h /tmp/www\"]\n        readinessProbe:\n          httpGet:\n            port: {host_port}\n          periodSeconds: 1\n"
        ),
    ));
    wait_for("web Ready", Duration::from_secs(60), || {
        let p = pod_of(&c, "web")?;
        (container_status(&p, 0)["ready"] == true && condition(&p, "Ready") == "True").then_some(())
    });
    // nothing answers on the host at that port: the probe really went into the pod's namespace
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // the tcpSocket liveness probe passes. Had it failed, the kill (logged at once) would come
    // with its second failure: initialDelaySeconds 6 + failureThreshold 2 x periodSeconds 1 after
    // the container started; watched to 2 s past that (a probe period's phase and its 1 s timeout)
    let p = pod_of(&c, "web").unwrap();
    let started = container_status(&p, 0)["state"]["running"]["startedAt"]
        .as_str()
        .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap())
        .expect("web's startedAt");
    let left =
        (started + chrono::Duration::seconds(6 + 2 + 2)).signed_duration_since(chrono::Utc::now());
    let until = Instant::now() + left.to_std().unwrap_or_default();
    watch_until(until, "web's liveness probe", || {
        let log = c.agent("node-h").log();
        match log.contains("failed liveness probe") {
            true => Err(tail(&log, 20)),
            false => Ok(()),
        }
    });
    let p = pod_of(&c, "web").unwrap();
    assert_eq!(container_status(&p, 0)["restartCount"], 0, "{p}");
    assert_eq!(condition(&p, "Ready"), "True");
    wait_for("hostweb Ready", Duration::from_secs(30), || {
        let p = pod_of(&c, "hostweb")?;
        (container_status(&p, 0)["ready"] == true).then_some(())
    });
    assert!(std::net::TcpStream::connect(("127.0.0.1", host_port)).is_ok());
    let p = pod_of(&c, "closed").unwrap();
    let cs = container_status(&p, 0);
    assert!(is_running(cs), "{cs}");
    assert_eq!(cs["ready"], false, "{cs}");
    assert_eq!(condition(&p, "Ready"), "False");
}

#[test]
fn startup_probe_holds_liveness_until_the_container_started() {
    let registry = common::registry();
    let mut c = Cluster::start();
    c.start_agent("node-s", &[]);
    // a slow starter: liveness (failureThreshold 1) would kill it at once without the gate
    c.apply(&ds_yaml(
        "slow",
        registry,
        "",
        "        command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 6; touch /tmp/started; sleep 3600 & wait\"]\n        startupProbe:\n          exec:\n            command: [\"test\", \"-f\", \"/tmp/started\"]\n          periodSeconds: 1\n          failureThreshold: 30\n        livenessProbe:\n          exec:\n            command: [\"test\", \"-f\", \"/tmp/started\"]\n          periodSeconds: 1\n          failureThreshold: 1\n",
    ));
    // one that never starts: killed after its startup failureThreshold and restarted
    c.apply(&ds_yaml(
        "never",
        registry,
        "",
        "        startupProbe:\n          exec:\n            command: [\"test\", \"-f\", \"/nonexistent\"]\n          periodSeconds: 1\n          failureThreshold: 2\n",
    ));
    wait_for("slow running, not started", Duration::from_secs(60), || {
        let p = pod_of(&c, "slow")?;
        let cs = container_status(&p, 0);
        (is_running(cs) && cs["started"] == false && cs["ready"] == false).then_some(())
    });
    wait_for("slow started and ready", Duration::from_secs(30), || {
        let p = pod_of(&c, "slow")?;
        let cs = container_status(&p, 0);
        (cs["started"] == true && cs["ready"] == true).then_some(())
    });
    let slow_started = Instant::now();
    wait_for("never restarted", Duration::from_secs(60), || {
        let p = pod_of(&c, "never")?;
        let cs = container_status(&p, 0);
        (cs["restartCount"].as_i64()? >= 1 && cs["lastState"]["terminated"].is_object())
            .then_some(())
    });
    // liveness now runs and passes. Had it failed, the kill (logged at once) would come with its
    // first failure (failureThreshold 1), at most one period (1 s) plus its timeout (1 s) after
    // the start was seen; watched to 3 s after that
    watch_until(
        slow_started + Duration::from_secs(3),
        "slow's liveness probe",
        || {
            let log = c.agent("node-s").log();
            match log.contains("failed liveness probe") {
                true => Err(tail(&log, 20)),
                false => Ok(()),
            }
        },
    );
    let p = pod_of(&c, "slow").unwrap();
    assert_eq!(container_status(&p, 0)["restartCount"], 0, "{p}");
    let log = c.agent("node-s").log();
    assert!(log.contains("failed startup probe"), "{}", tail(&log, 40));
}
