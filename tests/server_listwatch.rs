//! Lists and watches as clients rely on them, against the `daemonset-agent` binary: paging with
//! kubectl's `--chunk-size` (1.27 and the newest) and the Python client's `limit`/`_continue`, a
//! consistent snapshot across pages, 410 Gone for a continue token the store compacted past,
//! `resourceVersionMatch`, the `sendInitialEvents` bookmark on a raw watch; eviction, `kubectl
//! drain`/`cordon`/`uncordon` and DeleteCollection on a node that runs a bare pod and a
//! DaemonSet's pod (real agent, containerd, runc); and an agent whose API store is restored from
//! a backup: it lists afresh and stops the pod of the DaemonSet that no longer exists.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::api::Endpoint;
use common::proc::Proc;
use common::{wait_for, Containerd};
use serde_json::{json, Value};

/// The server (the binary) on a data directory and address it keeps across restarts, and the
/// agents started against it.
struct Cluster {
    /// First, so it drops first: removes everything the test made, pass or fail.
    _guard: common::Guard,
    dir: tempfile::TempDir,
    ctd: Option<Containerd>,
    server: Proc,
    listen: String,
    agents: Vec<Proc>,
}

impl Cluster {
    /// A server; with `containerd`, a containerd of its own for agents.
    fn start(containerd: bool) -> Cluster {
        let ctd = containerd.then(Containerd::start);
        let dir = tempfile::Builder::new()
            .prefix("dsa-lw-")
            .tempdir_in("/tmp")
            .unwrap();
        let mut guard = common::Guard::new().dir(dir.path());
        if let Some(ctd) = &ctd {
            guard = guard.containerd(ctd);
        }
        let listen = format!("127.0.0.1:{}", common::free_port());
        let server = Cluster::spawn_server(dir.path(), &listen, 0);
        let c = Cluster {
            _guard: guard,
            dir,
            ctd,
            server,
            listen,
            agents: vec![],
        };
        c.wait_ready();
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("server")
    }

    fn spawn_server(dir: &Path, listen: &str, n: usize) -> Proc {
        let data = dir.join("server");
        Proc::spawn(
            &[
                "server",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                listen,
            ],
            dir.join(format!("server-{n}.log")),
        )
    }

    fn wait_ready(&self) {
        wait_for("the server to answer", Duration::from_secs(20), || {
            (self.data().join("admin.kubeconfig").exists()
                && self.kubectl(&["get", "--raw", "/readyz"]).status.success())
            .then_some(())
        });
    }

    fn stop_server(&mut self) {
        self.server.stop();
    }

    fn start_server(&mut self, n: usize) {
        self.server = Cluster::spawn_server(self.dir.path(), &self.listen, n);
        self.wait_ready();
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::admin(self.listen.parse().unwrap(), &self.data())
    }

    fn state_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("agent-{node}"))
    }

    fn start_agent(&mut self, node: &str) {
        let config = self.dir.path().join(format!("agent-{node}.toml"));
        std::fs::write(&config, "container-logs-to-journald = false\n").unwrap();
        let ctd = self.ctd.as_ref().expect("a cluster with containerd");
        let args = [
            "agent".to_string(),
            "--config".into(),
            config.to_string_lossy().into(),
            "--node-name".into(),
            node.into(),
            "--kubeconfig".into(),
            self.data()
                .join("admin.kubeconfig")
                .to_string_lossy()
                .into(),
            "--containerd-socket".into(),
            ctd.socket.to_string_lossy().into(),
            "--containerd-namespace".into(),
            format!("ns-{node}"),
            "--state-dir".into(),
            self.state_dir(node).to_string_lossy().into(),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self.dir.path().join(format!("agent-{node}.log"));
        self.agents.push(Proc::spawn(&argv, log));
    }

    fn kubectl_with(&self, kubectl: &Path, args: &[&str]) -> Output {
        let out = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(self.data().join("admin.kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .output()
            .expect("run kubectl");
        eprintln!(
            "$ {} {}\n{}{}",
            kubectl.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            tail(&String::from_utf8_lossy(&out.stderr), 30)
        );
        out
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(common::kubectl(), args)
    }

    fn kubectl_ok_with(&self, kubectl: &Path, args: &[&str]) -> String {
        let out = self.kubectl_with(kubectl, args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed\n--- server ---\n{}",
            self.server.log_tail(30)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        self.kubectl_ok_with(common::kubectl(), args)
    }

    fn apply(&self, yaml: &str) {
        let f = self
            .dir
            .path()
            .join(format!("apply-{:08x}.yaml", rand::random::<u32>()));
        std::fs::write(&f, yaml).unwrap();
        self.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.kubectl_ok(args)).unwrap()
    }

    /// The pods of `node`'s containerd namespace with a running task, by pod name.
    fn running_pods(&self, node: &str) -> Vec<String> {
        let ctd = self.ctd.as_ref().unwrap();
        let ctr = |args: &[&str]| {
            let out = Command::new("ctr")
                .arg("--address")
                .arg(&ctd.socket)
                .args(["-n", &format!("ns-{node}")])
                .args(args)
                .output()
                .expect("run ctr");
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let mut pods: Vec<String> = ctr(&["tasks", "ls"])
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().nth(2) == Some("RUNNING"))
            .filter_map(|l| {
                let id = l.split_whitespace().next()?;
                let info: Value = serde_json::from_str(&ctr(&["containers", "info", id])).ok()?;
                Some(
                    info["Labels"]["io.daemonset-agent.pod.name"]
                        .as_str()?
                        .to_string(),
                )
            })
            .collect();
        pods.sort();
        pods
    }

    fn agent_logs(&self) -> String {
        self.agents.iter().map(|a| a.log_tail(40) + "\n").collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agents ---\n{}", self.agent_logs());
            eprintln!("--- server ---\n{}", self.server.log_tail(40));
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// The `continue` query value of a token (base64url needs no escaping).
fn cont(list: &Value) -> &str {
    list["metadata"]["continue"].as_str().unwrap_or("")
}

/// The kubectl releases the tests use: 1.27 (the oldest supported) and the newest.
fn kubectls() -> Vec<PathBuf> {
    vec![
        common::kubectl_release("1.27"),
        common::kubectl().to_path_buf(),
    ]
}

#[test]
fn lists_are_paged_with_kubectl_chunks_and_the_python_client() {
    let c = Cluster::start(false);
    for i in 0..12 {
        c.kubectl_ok(&["create", "namespace", &format!("team-{i:02}")]);
    }
    let all = names(&c.json(&["get", "namespaces", "-o", "json"]));
    assert_eq!(all.len(), 16, "{all:?}");

    for kubectl in kubectls() {
        // -v=6 logs each request: the pages and their continue tokens
        let out = c.kubectl_with(
            &kubectl,
            &["get", "namespaces", "--chunk-size=5", "-o", "name", "-v=6"],
        );
        assert!(out.status.success());
        let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_start_matches("namespace/").to_string())
            .collect();
        assert_eq!(listed, all, "{}", kubectl.display());
        let log = String::from_utf8_lossy(&out.stderr);
        let pages: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("/api/v1/namespaces?") && l.contains("limit=5"))
            .collect();
        assert_eq!(pages.len(), 4, "16 namespaces in pages of 5: {pages:#?}");
        assert_eq!(
            pages.iter().filter(|l| l.contains("continue=")).count(),
            3,
            "{pages:#?}"
        );
        // as Tables too: one header, then the rows of every page
        let table = c.kubectl_ok_with(&kubectl, &["get", "namespaces", "--chunk-size=5"]);
        let rows: Vec<&str> = table.lines().collect();
        assert!(rows[0].starts_with("NAME"), "{table}");
        let names: Vec<&str> = rows[1..]
            .iter()
            .map(|r| r.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(names, all, "{table}");
    }

    // the Python client pages with limit and _continue; later pages keep the first page's
    // snapshot while the namespaces change
    let script = r#"
import json, sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
first = v1.list_namespace(limit=5)
rv = first.metadata.resource_version
pages = [[n.metadata.name for n in first.items]]
remaining = [first.metadata.remaining_item_count]
v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="team-99")))
v1.delete_namespace("team-11")
token = first.metadata._continue
while token:
    page = v1.list_namespace(limit=5, _continue=token)
    assert page.metadata.resource_version == rv, (page.metadata.resource_version, rv)
    pages.append([n.metadata.name for n in page.items])
    remaining.append(page.metadata.remaining_item_count)
    token = page.metadata._continue
now = [n.metadata.name for n in v1.list_namespace().items]
print(json.dumps({"pages": pages, "remaining": remaining, "now": now}))
"#;
    let kubeconfig = c.data().join("admin.kubeconfig");
    let out = Command::new(common::python_client())
        .args(["-c", script])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pages: Vec<Vec<String>> = serde_json::from_value(got["pages"].clone()).unwrap();
    assert_eq!(pages.len(), 4);
    assert_eq!(pages.concat(), all, "the snapshot of the first page");
    assert_eq!(got["remaining"], json!([11, 6, 1, null]));
    let now: Vec<String> = serde_json::from_value(got["now"].clone()).unwrap();
    assert!(now.contains(&"team-99".to_string()), "{now:?}");
}

#[test]
fn continue_tokens_expire_with_410_and_resource_version_match_is_validated() {
    let c = Cluster::start(false);
    let ep = c.endpoint();
    let (code, body) = ep.get("/api/v1/namespaces?limit=2");
    assert_eq!(code, 200, "{body}");
    let first = parse(&body);
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let token = cont(&first).to_string();
    assert_eq!(names(&first), ["default", "kube-node-lease"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 2);
    // an exact list at the first page's resourceVersion is the same snapshot
    let (code, body) = ep.get(&format!(
        "/api/v1/namespaces?resourceVersion={rv}&resourceVersionMatch=Exact"
    ));
    assert_eq!(code, 200, "{body}");
    assert_eq!(names(&parse(&body)).len(), 4);

    // the store keeps 16 MiB of history: ten secrets of 700 KB push the page's snapshot out
    let data = "x".repeat(700_000);
    for i in 0..10 {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("big-{i}")}, "stringData": {"blob": data}});
        let (code, body) = ep.send(
            "POST",
            "/api/v1/namespaces/default/secrets",
            "application/json",
            &secret.to_string(),
        );
        assert_eq!(code, 201, "{}", tail(&body, 3));
    }
    let (code, body) = ep.get(&format!("/api/v1/namespaces?limit=2&continue={token}"));
    assert_eq!(code, 410, "{body}");
    let status = parse(&body);
    assert_eq!(status["reason"], "Expired");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "The provided continue parameter is too old to display a consistent list result."
        ),
        "{message}"
    );
    // the inconsistent token it offers goes on after the same item, at the latest state
    let inconsistent = cont(&status);
    assert!(!inconsistent.is_empty(), "{status}");
    let (code, body) = ep.get(&format!("/api/v1/namespaces?continue={inconsistent}"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(names(&parse(&body)), ["kube-public", "kube-system"]);
    let (code, body) = ep.get(&format!(
        "/api/v1/namespaces?resourceVersion={rv}&resourceVersionMatch=Exact"
    ));
    assert_eq!(code, 410, "{body}");
    assert_eq!(
        parse(&body)["message"],
        "The resourceVersion for the provided list is too old."
    );

    // kube-apiserver's validation of the list options
    let cases = [
        (
            "resourceVersionMatch=NotOlderThan",
            422,
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
        (
            "resourceVersion=0&resourceVersionMatch=Exact",
            422,
            "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        ),
        (
            "continue=e30",
            400,
            "invalid continue token: got invalid continue key version \"\"",
        ),
        (
            "watch=1&resourceVersionMatch=NotOlderThan",
            422,
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ),
    ];
    for (query, want_code, want) in cases {
        let (code, body) = ep.get(&format!("/api/v1/namespaces?{query}"));
        assert_eq!(code, want_code, "{query}: {body}");
        let message = parse(&body)["message"].as_str().unwrap().to_string();
        assert!(message.contains(want), "{query}: {message}");
    }
}

#[test]
fn a_watch_with_initial_events_ends_them_with_a_bookmark() {
    let c = Cluster::start(false);
    let ep = c.endpoint();
    let (_, body) = ep.get("/api/v1/namespaces");
    let rv = parse(&body)["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, body) = ep.get(&format!(
        "/api/v1/namespaces?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion={rv}&timeoutSeconds=1"
    ));
    assert_eq!(code, 200, "{body}");
    // the chunked body: one event per line
    let events: Vec<Value> = body
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(parse)
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["ADDED", "ADDED", "ADDED", "ADDED", "BOOKMARK"],
        "{body}"
    );
    let bookmark = &events[4]["object"];
    assert_eq!(bookmark["kind"], "Namespace");
    assert_eq!(
        bookmark["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(bookmark["metadata"]["resourceVersion"], rv.as_str());
}

/// The node's two pods: a DaemonSet's and a bare one bound with spec.nodeName. The pods of this
/// file use the host's network: what they show needs no pod network, and they take no address
/// from the machine's shared CNI pool (host-local, 254 addresses for every test run here).
fn node_with_two_pods(c: &Cluster, node: &str, registry: &str) {
    c.apply(&format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: keeper\nspec:\n  selector:\n    matchLabels: {{app: keeper}}\n  template:\n    metadata:\n      labels: {{app: keeper}}\n    spec:\n      hostNetwork: true\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: main\n        image: {registry}/busybox:v1\n        command: [sleep, '3600']\n"
    ));
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bare\n  labels: {{app: bare}}\nspec:\n  nodeName: {node}\n  hostNetwork: true\n  terminationGracePeriodSeconds: 2\n  volumes:\n  - name: scratch\n    emptyDir: {{}}\n  containers:\n  - name: main\n    image: {registry}/busybox:v1\n    command: [sleep, '3600']\n    volumeMounts:\n    - {{name: scratch, mountPath: /scratch}}\n"
    ));
    wait_for("both pods running", Duration::from_secs(90), || {
        let pods = c.running_pods(node);
        (pods.len() == 2 && pods.contains(&"bare".to_string())).then_some(())
    });
}

fn ds_pod(c: &Cluster) -> String {
    let pods = c.json(&["get", "pods", "-l", "app=keeper", "-o", "json"]);
    names(&pods).pop().expect("the DaemonSet's pod")
}

#[test]
fn drain_cordon_evict_and_delete_collection_on_a_node_with_a_bare_pod() {
    let registry = common::registry();
    let mut c = Cluster::start(true);
    let node = "drained";
    c.start_agent(node);
    wait_for("the node registered", Duration::from_secs(30), || {
        c.kubectl(&["get", "node", node])
            .status
            .success()
            .then_some(())
    });

    // a bare pod without nodeName is bound by the server's scheduler to the one node there is
    c.kubectl_ok(&["run", "floating", &format!("--image={registry}/busybox:v1")]);
    wait_for(
        "the scheduler binds the bare pod",
        Duration::from_secs(30),
        || {
            let p = c.json(&["get", "pod", "floating", "-o", "json"]);
            let scheduled = p["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "PodScheduled")?
                .clone();
            (p["spec"]["nodeName"] == node && scheduled["status"] == "True").then_some(())
        },
    );
    c.kubectl_ok(&["delete", "pod", "floating"]);

    // discovery offers the eviction subresource as kubectl drain looks for it
    let core = c.json(&["get", "--raw", "/api/v1"]);
    let eviction = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/eviction")
        .expect("pods/eviction in discovery");
    assert_eq!(
        (&eviction["kind"], &eviction["group"], &eviction["version"]),
        (&json!("Eviction"), &json!("policy"), &json!("v1"))
    );

    for (round, kubectl) in kubectls().iter().enumerate() {
        node_with_two_pods(&c, node, registry);
        let keeper = ds_pod(&c);
        c.kubectl_ok_with(kubectl, &["cordon", node]);
        assert_eq!(
            c.json(&["get", "node", node, "-o", "json"])["spec"]["unschedulable"],
            true
        );
        // 1.27 evicts (a protobuf policy/v1 Eviction); the newest deletes (a protobuf
        // DeleteOptions) when told not to evict
        let mut drain = vec![
            "drain",
            node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--force",
            "--timeout=90s",
        ];
        if round == 1 {
            drain.push("--disable-eviction");
        }
        let out = c.kubectl_with(kubectl, &drain);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "drain failed: {text}");
        let verb = if round == 0 { "evicted" } else { "deleted" };
        assert!(text.contains(&format!("pod/bare {verb}")), "{text}");
        assert!(text.contains(&format!("node/{node} drained")), "{text}");
        // the bare pod is gone and stopped; the DaemonSet's pod ignores the cordon
        assert!(!c
            .kubectl_ok(&["get", "pods", "-o", "name"])
            .contains("pod/bare"));
        assert_eq!(c.running_pods(node), std::slice::from_ref(&keeper));
        assert_eq!(ds_pod(&c), keeper, "the DaemonSet's pod was left alone");
        c.kubectl_ok_with(kubectl, &["uncordon", node]);
        let spec = &c.json(&["get", "node", node, "-o", "json"])["spec"];
        assert!(
            spec["unschedulable"].is_null() || spec["unschedulable"] == false,
            "{spec}"
        );
        c.kubectl_ok(&["delete", "ds", "keeper"]);
        wait_for("the DaemonSet's pod gone", Duration::from_secs(60), || {
            c.running_pods(node).is_empty().then_some(())
        });
    }

    // DeleteCollection (client-go's, the Python client's) by label; kubectl's --all
    node_with_two_pods(&c, node, registry);
    let (code, body) = c.endpoint().http(
        b"DELETE /api/v1/namespaces/default/pods?labelSelector=app%3Dbare HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200, "{body}");
    let deleted = parse(&body);
    assert_eq!(deleted["kind"], "PodList");
    assert_eq!(names(&deleted), ["bare"]);
    assert!(deleted["items"][0]["metadata"]["deletionTimestamp"].is_string());
    wait_for("the bare pod stopped", Duration::from_secs(60), || {
        (c.running_pods(node).len() == 1).then_some(())
    });
    let before = ds_pod(&c);
    let out = c.kubectl_ok(&["delete", "pods", "--all"]);
    assert!(out.contains(&format!("pod \"{before}\" deleted")), "{out}");
    // the DaemonSet's controller makes a new pod for the node
    wait_for("a new DaemonSet pod", Duration::from_secs(60), || {
        let pods = c.running_pods(node);
        (pods.len() == 1 && pods[0] != before).then_some(())
    });
}

/// Restored from a backup, the store is behind what the agent saw. Only the SQLite file put
/// back: the server notices (its high-water mark, outside the file) and bumps its
/// resourceVersions, so resumed watches are told 410 and relist. The whole data directory put
/// back (the mark too): only the agent can tell, by the list's older resourceVersion, and it
/// lists afresh. Either way the pod of the DaemonSet the restored store does not have stops.
#[test]
fn an_agent_lists_afresh_when_the_store_is_restored_from_a_backup() {
    let registry = common::registry();
    let mut c = Cluster::start(true);
    let node = "restored";
    let files = ["state.db", "state.db.high-water"];
    c.start_agent(node);
    for (round, restored) in [&files[..1], &files[..]].into_iter().enumerate() {
        // the backup: the files of the stopped server
        c.stop_server();
        for f in restored {
            std::fs::copy(c.data().join(f), c.dir.path().join(format!("{f}.backup"))).unwrap();
        }
        c.start_server(2 * round + 1);
        let name = format!("after-backup-{round}");
        c.apply(&format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      hostNetwork: true\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {registry}/busybox:v1\n        command: [sleep, '3600']\n"
        ));
        wait_for(
            "the DaemonSet's pod running",
            Duration::from_secs(90),
            || (c.running_pods(node).len() == 1).then_some(()),
        );
        let status = Command::new(env!("CARGO_BIN_EXE_daemonset-agent"))
            .args(["status", "--state-dir"])
            .arg(c.state_dir(node))
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&status.stdout).to_string();
        assert!(status.contains("API in sync"), "{status}");

        // restore: the store goes back to before the DaemonSet
        c.stop_server();
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(c.data().join(format!("state.db{suffix}")));
        }
        for f in restored {
            std::fs::copy(c.dir.path().join(format!("{f}.backup")), c.data().join(f)).unwrap();
        }
        c.start_server(2 * round + 2);
        wait_for("the agent to stop the pod", Duration::from_secs(60), || {
            c.running_pods(node).is_empty().then_some(())
        });
        let out = c.kubectl_ok(&["get", "pods", "-o", "name"]);
        assert_eq!(out.trim(), "", "the restored store has no pods");
        let server = c.server.log();
        let agent = c.agents[0].log();
        if round == 0 {
            assert!(
                server.contains("restored from a backup?"),
                "{}",
                tail(&server, 20)
            );
        } else {
            assert!(
                !server.contains("restored from a backup?"),
                "{}",
                tail(&server, 20)
            );
            assert!(agent.contains("went back in time"), "{}", tail(&agent, 40));
        }
    }
}
