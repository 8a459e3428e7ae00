//! Agents and kubectl across server replicas: one etcd member on loopback, or three (Debian's
//! `etcd-server`; a missing `etcd` fails, it is not skipped), two `daemonset-agent server`
//! replicas on it with leader election on a short Lease, agents joined with both addresses
//! (`server = [A, B]`). kill -9 of the server the agents use, which leads: the agents fail over
//! within a heartbeat period and resume their watches without relisting, nothing they run
//! restarts (the same container ids and pids in containerd), the other replica takes the
//! controllers within the Lease duration, a DaemonSet created right after runs on every node, and
//! kubectl against the survivor (with the first replica's admin kubeconfig: the CA is shared)
//! sees every acknowledged object at the same resourceVersion, and etcd has each by key. With
//! three members, one is killed -9 before: writes go on, acknowledged, and an image update
//! reaches every node. An agent whose first address is
//! down at start joins and runs through the second.
mod common;
#[path = "common/replicas.rs"]
mod replicas;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::proc::Proc;
use common::{wait_for, Containerd, Guard};
use replicas::{Etcd, Replica};
use serde_json::{json, Value};

/// The node Lease's duration: renewed every 2 s (a quarter), the heartbeat period.
const NODE_LEASE_S: u64 = 8;
/// The controllers' Lease (`--leader-elect-lease-duration`).
const LEADER_LEASE: Duration = Duration::from_secs(4);
const LEADER_FLAGS: &[&str] = &[
    "--leader-elect-lease-duration",
    "4s",
    "--leader-elect-renew-deadline",
    "3s",
    "--leader-elect-retry-period",
    "1s",
];

/// One node: its containerd, namespace, state directory and agent.
struct Node {
    name: String,
    namespace: String,
    config: PathBuf,
    ctd: Containerd,
    agent: Option<Proc>,
}

impl Node {
    /// A node joining `servers` with `join`; not started.
    fn new(dir: &Path, name: &str, servers: &[String], join: &str) -> Node {
        let ctd = Containerd::start();
        let namespace = format!("ns-failover{:x}-{name}", rand::random::<u32>());
        let config = dir.join(format!("agent-{name}.toml"));
        let servers: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
        std::fs::write(
            &config,
            format!(
                "node-name = {name:?}\nserver = [{}]\ntoken = {join:?}\ncontainerd-socket = {:?}\ncontainerd-namespace = {namespace:?}\nstate-dir = {:?}\ncontainer-logs-to-journald = false\nnode-lease-duration-seconds = {NODE_LEASE_S}\n",
                servers.join(", "),
                ctd.socket,
                dir.join(format!("agent-{name}")),
            ),
        )
        .unwrap();
        Node {
            name: name.into(),
            namespace,
            config,
            ctd,
            agent: None,
        }
    }

    fn start(&mut self, dir: &Path) {
        let log = dir.join(format!("agent-{}.log", self.name));
        self.agent = Some(Proc::spawn(
            &["agent", "--config", self.config.to_str().unwrap()],
            log,
        ));
    }

    fn log(&self) -> String {
        self.agent.as_ref().map(Proc::log).unwrap_or_default()
    }

    /// The running tasks in containerd: container id -> pid.
    fn tasks(&self) -> BTreeMap<String, String> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.ctd.socket)
            .args(["-n", &self.namespace, "tasks", "ls"])
            .output()
            .expect("run ctr");
        assert!(out.status.success(), "ctr tasks ls");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3 && f[2] == "RUNNING").then(|| (f[0].to_string(), f[1].to_string()))
            })
            .collect()
    }

    /// Whether the agent said it now uses replica `r`.
    fn uses(&self, r: &Replica) -> bool {
        let addr = r.addr.to_string();
        self.log()
            .lines()
            .any(|l| l.contains("now using API server") && l.contains(&addr))
    }

    /// How many lists (not resumed watches) the agent's watches made so far.
    fn lists(&self) -> usize {
        self.log().matches("listing from the API").count()
    }
}

/// A DaemonSet of host-network pods: a shell that leaves at once on SIGTERM.
fn daemonset(name: &str) -> String {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "c", "image": format!("{}/busybox:v1", common::registry()),
                        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]}]}}}})
    .to_string()
}

/// Waits until DaemonSet `name` has a ready pod on each of `n` nodes (asked of `r`).
fn wait_ready(r: &Replica, name: &str, n: i64, timeout: Duration) {
    wait_for(&format!("{name} ready on {n} nodes"), timeout, || {
        let ds = r.get_json(&format!(
            "/apis/apps/v1/namespaces/default/daemonsets/{name}"
        ))?;
        let s = &ds["status"];
        (s["desiredNumberScheduled"] == json!(n) && s["numberReady"] == json!(n)).then_some(())
    });
}

fn created(resp: (u16, String)) -> Value {
    assert_eq!(resp.0, 201, "{}", resp.1);
    serde_json::from_str(&resp.1).unwrap()
}

/// `daemonset-agent token create` against `r`: a join token.
fn join_token(r: &Replica) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_daemonset-agent"))
        .args(["token", "create", "--kubeconfig"])
        .arg(r.kubeconfig())
        .output()
        .expect("run daemonset-agent token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let join = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(join.contains("::"), "{join}");
    join
}

/// kubectl with replica `from`'s admin kubeconfig pointed at replica `to`'s address.
fn kubectl_across(dir: &Path, from: &Replica, to: &Replica, args: &[&str]) -> String {
    let text = std::fs::read_to_string(from.kubeconfig()).unwrap();
    let moved = text.replace(&from.addr.to_string(), &to.addr.to_string());
    assert_ne!(moved, text, "the kubeconfig names {}", from.addr);
    let kc = dir.join("across.kubeconfig");
    std::fs::write(&kc, moved).unwrap();
    let out = Command::new(common::kubectl())
        .arg("--kubeconfig")
        .arg(&kc)
        .args(args)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} with {}'s kubeconfig against {}: {}",
        from.name,
        to.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `members` etcd members and a directory for the test's replicas and nodes.
fn etcd_and_dir(prefix: &str, members: usize) -> (Etcd, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    (Etcd::start(members), dir)
}

/// The names and resourceVersions of the acknowledged ConfigMaps kubectl lists with `from`'s
/// admin kubeconfig against `to`.
fn listed_across(d: &Path, from: &Replica, to: &Replica) -> Vec<(String, String)> {
    let out = kubectl_across(
        d,
        from,
        to,
        &["get", "configmaps", "-l", "t=failover", "-o", "json"],
    );
    let listed: Value = serde_json::from_str(&out).unwrap();
    listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(name_rv)
        .collect()
}

fn name_rv(o: &Value) -> (String, String) {
    let m = &o["metadata"];
    (
        m["name"].as_str().unwrap().to_string(),
        m["resourceVersion"].as_str().unwrap().to_string(),
    )
}

/// A ConfigMap `name` created through `r`, acknowledged (201).
fn write_cm(r: &Replica, name: &str) -> Value {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"t": "failover"}}});
    created(r.api().send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        &cm.to_string(),
    ))
}

#[test]
fn agents_fail_over_when_the_leading_server_dies() {
    fail_over(1);
}

/// The whole fault: three etcd members, two replicas, three agents with containers; an
/// etcd member killed -9 first (writes go on, the agents' watches bring a DaemonSet's image
/// update to every node), then the leading replica.
#[test]
fn agents_and_replicas_survive_an_etcd_member_and_the_leader_killed() {
    fail_over(3);
}

/// Two replicas on `members` etcd members, three agents; with 3 members one is killed -9 first.
fn fail_over(members: usize) {
    let (mut etcd, dir) = etcd_and_dir("dsa-failover-", members);
    let d = dir.path();
    let mut a = Replica::start(d, "a", &etcd, LEADER_FLAGS);
    wait_for("a to lead", Duration::from_secs(30), || {
        (a.holder().as_deref() == Some(a.identity().as_str())).then_some(())
    });
    let b = Replica::start(d, "b", &etcd, LEADER_FLAGS);
    let join = join_token(&a);
    let servers = [a.url(), b.url()];
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::new(d, &format!("f{i}"), &servers, &join))
        .collect();
    let mut guard = Guard::new().dir(d);
    for n in &nodes {
        guard = guard.containerd(&n.ctd);
    }
    let _guard = guard;
    for n in &mut nodes {
        n.start(d);
    }
    let dss = "/apis/apps/v1/namespaces/default/daemonsets";
    created(
        a.api()
            .send("POST", dss, "application/json", &daemonset("before")),
    );
    wait_ready(&a, "before", 3, Duration::from_secs(120));
    // objects acknowledged by a, to be found on b
    let mut acked: Vec<Value> = (0..5)
        .map(|i| write_cm(&a, &format!("acked-{i}")))
        .collect();
    if members == 3 {
        etcd.kill(0);
        // writes go on, on both replicas, every one acknowledged
        acked.extend((0..10).map(|i| {
            let r = if i % 2 == 0 { &a } else { &b };
            write_cm(r, &format!("member-down-{i}"))
        }));
        // the agents' watches go on: an image update reaches every node
        let image = format!("{}/busybox:v2", common::registry());
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
        let (code, body) = a.api().send(
            "PATCH",
            &format!("{dss}/before"),
            "application/strategic-merge-patch+json",
            &patch.to_string(),
        );
        assert_eq!(code, 200, "{body}");
        wait_for("v2 on every node", Duration::from_secs(120), || {
            let ds = a.get_json(&format!("{dss}/before"))?;
            let s = &ds["status"];
            (s["observedGeneration"] == json!(2)
                && s["updatedNumberScheduled"] == json!(3)
                && s["numberReady"] == json!(3))
            .then_some(())
        });
        // kubectl against either replica: the same objects at the same resourceVersions
        acked.sort_by_key(name_rv);
        let want: Vec<(String, String)> = acked.iter().map(name_rv).collect();
        assert_eq!(listed_across(d, &b, &a), want);
        assert_eq!(listed_across(d, &a, &b), want);
    }
    for n in &nodes {
        if members == 1 {
            assert!(n.uses(&a) && !n.uses(&b), "{} uses a, the first", n.name);
        } else if n.uses(&b) {
            // while etcd lost a member, a may have answered 5xx or late: the agent's heartbeat
            // then moves it to b, as it should (the leader's kill below still ends a under it)
            eprintln!("{} moved to b during the member's kill", n.name);
        }
    }
    // one running container per node (an updated one's predecessor gone)
    let tasks: Vec<BTreeMap<String, String>> = nodes
        .iter()
        .map(|n| {
            wait_for(
                &format!("{}: one running container", n.name),
                Duration::from_secs(60),
                || Some(n.tasks()).filter(|t| t.len() == 1),
            )
        })
        .collect();
    let lists: Vec<usize> = nodes.iter().map(Node::lists).collect();
    let leases_before: Vec<String> = nodes.iter().map(|n| b.lease_renewed(&n.name)).collect();

    a.kill();
    let killed = Instant::now();
    // the agents move to b within a heartbeat period (2 s), plus a margin for a loaded machine
    for n in &nodes {
        wait_for(
            &format!("{} to fail over to b", n.name),
            Duration::from_secs(30),
            || n.uses(&b).then_some(()),
        );
    }
    let failed_over = killed.elapsed();
    // b takes the controllers within the Lease duration (plus its retry period and a margin)
    wait_for("b to lead", Duration::from_secs(30), || {
        (b.holder().as_deref() == Some(b.identity().as_str())).then_some(())
    });
    let led = killed.elapsed();
    // the node Leases go on being renewed, through b
    for (n, before) in nodes.iter().zip(&leases_before) {
        wait_for(
            &format!("{}'s Lease renewed through b", n.name),
            Duration::from_secs(30),
            || (b.lease_renewed(&n.name) != *before).then_some(()),
        );
    }
    // a DaemonSet created right after runs on every node
    created(
        b.api()
            .send("POST", dss, "application/json", &daemonset("after")),
    );
    wait_ready(&b, "after", 3, Duration::from_secs(120));
    let ready = killed.elapsed();
    eprintln!(
        "fail-over: agents on b after {failed_over:?}, b leading after {led:?}, a new DaemonSet ready everywhere after {ready:?}"
    );
    assert!(
        led <= LEADER_LEASE + Duration::from_secs(10),
        "b led after {led:?}:\n{}",
        b.log_tail(30)
    );
    for ((n, before), listed) in nodes.iter().zip(&tasks).zip(&lists) {
        let now = n.tasks();
        for (id, pid) in before {
            assert_eq!(
                now.get(id),
                Some(pid),
                "{}: container {id} kept running with pid {pid}: {now:?}",
                n.name
            );
        }
        assert_eq!(now.len(), 2, "{}: before and after: {now:?}", n.name);
        assert_eq!(
            n.lists(),
            *listed,
            "{}: its watches resumed on b without listing again:\n{}",
            n.name,
            n.agent.as_ref().unwrap().log_tail(60)
        );
    }
    // kubectl with a's admin kubeconfig against b sees every acknowledged object, unchanged
    acked.sort_by_key(name_rv);
    let want: Vec<(String, String)> = acked.iter().map(name_rv).collect();
    assert_eq!(listed_across(d, &a, &b), want);
    // and etcd has every one, key by key
    let stored = etcd.keys("/registry/configmaps/default/");
    for (name, _) in &want {
        let key = format!("/registry/configmaps/default/{name}");
        assert!(stored.contains(&key), "{key} not in etcd");
    }
    let ds = kubectl_across(d, &a, &b, &["get", "daemonsets", "-o", "name"]);
    assert_eq!(
        ds.lines().collect::<Vec<_>>(),
        ["daemonset.apps/after", "daemonset.apps/before"]
    );
}

/// An agent whose first server is down at start joins through the second and runs from it.
#[test]
fn an_agent_whose_first_server_is_down_uses_the_second() {
    let (etcd, dir) = etcd_and_dir("dsa-failover-first-", 1);
    let d = dir.path();
    let b = Replica::start(d, "b", &etcd, &[]);
    let join = join_token(&b);
    // nothing listens on the first address
    let down = format!("https://127.0.0.1:{}", common::free_port());
    let mut node = Node::new(d, "g0", &[down.clone(), b.url()], &join);
    let _guard = Guard::new().dir(d).containerd(&node.ctd);
    node.start(d);
    created(b.api().send(
        "POST",
        "/apis/apps/v1/namespaces/default/daemonsets",
        "application/json",
        &daemonset("second"),
    ));
    wait_ready(&b, "second", 1, Duration::from_secs(120));
    let log = node.log();
    assert!(
        log.contains("could not reach the API server to join; trying the next")
            && log.contains(&down),
        "the join skipped {down}:\n{}",
        node.agent.as_ref().unwrap().log_tail(40)
    );
    assert_eq!(node.tasks().len(), 1);
}

/// Issue 14: an agent's watches told 410 Gone resume cleanly. The agent is frozen (SIGSTOP) with
/// its watches open; its replica is killed -9 and started again on the same etcd (no in-memory
/// history), a DaemonSet is deleted, writes go on and etcd is compacted past the agent's
/// resourceVersion, a DaemonSet is created; the agent thawed resumes its watches from a compacted
/// resourceVersion, is told 410 (kube-apiserver's "too old resource version") and lists again:
/// the container it kept runs on with the same pid, the deleted DaemonSet's pod goes from the
/// node and the new DaemonSet's pod comes.
#[test]
fn an_agent_relists_when_its_watch_resumes_from_a_compacted_revision() {
    let (etcd, dir) = etcd_and_dir("dsa-failover-compact-", 1);
    let d = dir.path();
    let mut a = Replica::start(d, "a", &etcd, LEADER_FLAGS);
    let join = join_token(&a);
    let mut node = Node::new(d, "c0", &[a.url()], &join);
    let _guard = Guard::new().dir(d).containerd(&node.ctd);
    node.start(d);
    let dss = "/apis/apps/v1/namespaces/default/daemonsets";
    for name in ["kept", "doomed"] {
        created(
            a.api()
                .send("POST", dss, "application/json", &daemonset(name)),
        );
        wait_ready(&a, name, 1, Duration::from_secs(120));
    }
    let before = wait_for("two running containers", Duration::from_secs(60), || {
        Some(node.tasks()).filter(|t| t.len() == 2)
    });
    let kept_pod = wait_for("kept's pod", Duration::from_secs(30), || {
        let pods = a.get_json("/api/v1/namespaces/default/pods")?;
        pods["items"]
            .as_array()?
            .iter()
            .find(|p| p["metadata"]["ownerReferences"][0]["name"] == "kept")
            .map(|p| p["metadata"]["uid"].clone())
    });
    let lists = node.lists();
    let agent_rv = etcd.revision();

    node.agent.as_ref().unwrap().signal(libc::SIGSTOP);
    a.restart(d, &etcd, LEADER_FLAGS);
    let (code, body) = a
        .api()
        .send("DELETE", &format!("{dss}/doomed"), "application/json", "");
    assert_eq!(code, 200, "{body}");
    for i in 0..5 {
        write_cm(&a, &format!("compacted-{i}"));
    }
    let compacted = etcd.revision();
    assert!(compacted > agent_rv, "writes moved etcd past {agent_rv}");
    etcd.compact(compacted);
    created(
        a.api()
            .send("POST", dss, "application/json", &daemonset("after")),
    );
    node.agent.as_ref().unwrap().signal(libc::SIGCONT);

    wait_ready(&a, "after", 1, Duration::from_secs(120));
    let after = wait_for(
        "the doomed pod gone, the new one running",
        Duration::from_secs(120),
        || Some(node.tasks()).filter(|t| t.len() == 2 && t.keys().ne(before.keys())),
    );
    let tail = node.agent.as_ref().unwrap().log_tail(80);
    // kube's watcher logs a 410 event as "<message>: Expired" (Status' reason)
    let log = node.log();
    let gone = log
        .lines()
        .find(|l| l.contains("watch failed") && l.contains("Expired"));
    assert!(gone.is_some(), "the agent was told 410 Gone:\n{tail}");
    eprintln!("the agent was told: {}", gone.unwrap());
    // the 410 sends the watcher back to a list, after its back-off: the containers may change
    // (through the Pods watch, which resumed from a later resourceVersion) before that list
    wait_for("the agent to list again", Duration::from_secs(60), || {
        Some(()).filter(|_| node.lists() > lists)
    });
    // one of the two containers runs on with its pid: kept's (doomed's is gone)
    let same: Vec<_> = before
        .iter()
        .filter(|(id, pid)| after.get(*id) == Some(*pid))
        .collect();
    assert_eq!(
        same.len(),
        1,
        "one container kept, same pid: {before:?} -> {after:?}"
    );
    // the pods on the node: kept's (the same) and after's; doomed's removed
    wait_for("doomed's pod removed", Duration::from_secs(60), || {
        let pods = a.get_json("/api/v1/namespaces/default/pods")?;
        let mut owners: Vec<(String, Value)> = pods["items"]
            .as_array()?
            .iter()
            .map(|p| {
                let m = &p["metadata"];
                (
                    m["ownerReferences"][0]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    m["uid"].clone(),
                )
            })
            .collect();
        owners.sort_by(|x, y| x.0.cmp(&y.0));
        let names: Vec<&str> = owners.iter().map(|o| o.0.as_str()).collect();
        (names == ["after", "kept"]).then_some(())?;
        (owners[1].1 == kept_pod).then_some(())
    });
}
