//! The API server against the real kubectl (1.27+ on the PATH, see tests/common) with its default
//! flags, the official Python client, and raw HTTP for watch resume, 410 Gone and malformed input.
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::api::Endpoint;
use daemonset_agent::core::validation::Policy;
use daemonset_agent::server::{start, RunningServer, ServerOptions};
use serde_json::Value;

struct Srv {
    rt: tokio::runtime::Runtime,
    server: Option<RunningServer>,
    data: PathBuf,
    cache: tempfile::TempDir,
}

impl Srv {
    fn start(data: &Path) -> Srv {
        Srv::start_with(data, Policy::default())
    }
    fn start_with(data: &Path, policy: Policy) -> Srv {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt
            .block_on(start(ServerOptions {
                data_dir: data.to_path_buf(),
                listen: "127.0.0.1:0".parse().unwrap(),
                insecure_listen: None,
                policy,
                ..Default::default()
            }))
            .unwrap();
        Srv {
            rt,
            server: Some(server),
            data: data.to_path_buf(),
            cache: tempfile::tempdir().unwrap(),
        }
    }
    fn addr(&self) -> Endpoint {
        Endpoint::admin(self.server.as_ref().unwrap().addr, &self.data)
    }
    fn stop(mut self) {
        let s = self.server.take().unwrap();
        self.rt.block_on(s.shutdown());
    }
    fn kubectl(&self, args: &[&str]) -> Output {
        let out = Command::new(common::kubectl())
            .arg("--kubeconfig")
            .arg(self.data.join("admin.kubeconfig"))
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .output()
            .unwrap();
        eprintln!(
            "$ kubectl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }
    fn kubectl_json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.kubectl_ok(args)).unwrap()
    }
    fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = Command::new(common::kubectl())
            .arg("--kubeconfig")
            .arg(self.data.join("admin.kubeconfig"))
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        eprintln!(
            "$ kubectl {} <<EOF\n{input}EOF\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// One raw HTTP/1.1 request over verified TLS as admin; returns status code and body.
fn http(ep: &Endpoint, raw: &[u8]) -> (u16, String) {
    ep.http(raw)
}

fn get(ep: &Endpoint, path: &str) -> (u16, String) {
    ep.get(path)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Polls `f` until it returns Some, for at most 20 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn revisions_of(srv: &Srv, ds: &str) -> Vec<Value> {
    let list = srv.kubectl_json(&["get", "controllerrevisions", "-o", "json"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["metadata"]["ownerReferences"][0]["name"] == ds)
        .cloned()
        .collect()
}

const NODE: &str = r#"{"apiVersion": "v1", "kind": "Node",
  "metadata": {"name": "worker-1", "labels": {"kubernetes.io/hostname": "worker-1", "kubernetes.io/os": "linux"}},
  "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
    "lastHeartbeatTime": "2026-11-24T00:00:00Z", "lastTransitionTime": "2026-11-24T00:00:00Z"}],
    "nodeInfo": {"kubeletVersion": "daemonset-agent-0.1.0", "machineID": "", "systemUUID": "", "bootID": "",
      "kernelVersion": "6.1", "osImage": "Debian", "containerRuntimeVersion": "containerd://1.6.20",
      "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}}}
"#;

#[test]
fn kubectl_apply_get_label_delete_with_default_flags() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start(dir.path());
    let d = dir.path();

    let out = srv.kubectl_ok(&["apply", "-f", &write(d, "nm.yaml", NODE_MONITOR)]);
    assert!(out.contains("daemonset.apps/node-monitor created"), "{out}");
    let out = srv.kubectl_ok(&["apply", "-f", &write(d, "kp.yaml", KUBE_PROXY)]);
    assert!(out.contains("daemonset.apps/kube-proxy created"), "{out}");

    let ds = srv.kubectl_json(&["get", "ds", "node-monitor", "-o", "json"]);
    assert_eq!(ds["metadata"]["generation"], 1);
    assert_eq!(ds["metadata"]["namespace"], "default");
    assert!(ds["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert!(ds["metadata"]["creationTimestamp"].is_string());
    assert_eq!(
        ds["spec"]["updateStrategy"]["type"], "RollingUpdate",
        "defaulted"
    );
    assert_eq!(ds["spec"]["revisionHistoryLimit"], 10, "defaulted");
    let rv1: u64 = ds["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    eventually("observedGeneration 1", || {
        let ds = srv.kubectl_json(&["get", "ds", "node-monitor", "-o", "json"]);
        (ds["status"]["observedGeneration"] == 1).then_some(())
    });
    let revs = eventually("first revision", || {
        let r = revisions_of(&srv, "node-monitor");
        (r.len() == 1).then_some(r)
    });
    assert_eq!(revs[0]["revision"], 1);
    assert_eq!(revs[0]["data"]["spec"]["template"]["$patch"], "replace");
    let hash = revs[0]["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(revs[0]["metadata"]["name"], format!("node-monitor-{hash}"));
    assert_eq!(revs[0]["metadata"]["labels"]["app"], "monitoring");

    // A second apply of a changed file: a strategic merge patch.
    let changed = NODE_MONITOR.replace("monitoring-agent:latest", "monitoring-agent:v2");
    let out = srv.kubectl_ok(&["apply", "-f", &write(d, "nm2.yaml", &changed)]);
    assert!(
        out.contains("daemonset.apps/node-monitor configured"),
        "{out}"
    );
    let ds = srv.kubectl_json(&["get", "ds", "node-monitor", "-o", "json"]);
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["image"],
        "monitoring-agent:v2"
    );
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "100m"
    );
    assert_eq!(ds["metadata"]["generation"], 2);
    let rv2: u64 = ds["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    let revs = eventually("second revision", || {
        let r = revisions_of(&srv, "node-monitor");
        (r.len() == 2).then_some(r)
    });
    let newest = revs
        .iter()
        .find(|r| r["revision"] == 2)
        .expect("revision 2");
    assert_ne!(
        newest["metadata"]["labels"]["controller-revision-hash"],
        hash.as_str()
    );
    // An unchanged apply changes nothing.
    let out = srv.kubectl_ok(&["apply", "-f", &write(d, "nm3.yaml", &changed)]);
    assert!(out.contains("unchanged"), "{out}");

    // Tables.
    let out = srv.kubectl_ok(&["get", "ds"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ]
    );
    assert!(
        out.contains("node-monitor") && out.contains("kube-proxy"),
        "{out}"
    );
    let out = srv.kubectl_ok(&["get", "ds", "-o", "wide"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(&header[9..], ["CONTAINERS", "IMAGES", "SELECTOR"], "{out}");
    assert!(
        out.contains("monitoring-agent:v2") && out.contains("app=monitoring"),
        "{out}"
    );
    let out = srv.kubectl_ok(&["get", "ds", "node-monitor", "-o", "yaml"]);
    assert!(
        out.contains("kind: DaemonSet") && out.contains("name: node-monitor"),
        "{out}"
    );
    let out = srv.kubectl_ok(&["get", "ds", "-A"]);
    assert!(
        out.lines().next().unwrap().starts_with("NAMESPACE"),
        "{out}"
    );

    // Nodes.
    let out = srv.kubectl_stdin(&["create", "-f", "-"], NODE);
    assert!(out.status.success());
    let out = srv.kubectl_ok(&["get", "nodes", "--show-labels"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "LABELS"]
    );
    assert!(out.contains("worker-1   Ready"), "{out}");
    assert!(out.contains("kubernetes.io/hostname=worker-1"), "{out}");
    srv.kubectl_ok(&[
        "label",
        "node",
        "worker-1",
        "node-role.kubernetes.io/worker=true",
    ]);
    srv.kubectl_ok(&["label", "node", "worker-1", "k=v"]);
    let node = srv.kubectl_json(&["get", "node", "worker-1", "-o", "json"]);
    assert_eq!(node["metadata"]["labels"]["k"], "v");
    let out = srv.kubectl_ok(&["get", "nodes"]);
    assert!(out.contains("worker"), "{out}");
    // The node now matches both DaemonSets: the controller counts it.
    eventually("desired 1", || {
        let ds = srv.kubectl_json(&["get", "ds", "node-monitor", "-o", "json"]);
        (ds["status"]["desiredNumberScheduled"] == 1 && ds["status"]["numberUnavailable"] == 1)
            .then_some(())
    });
    // The DaemonSet controller created the pod of the node; its status, as an agent reports
    // it: counted once Ready.
    let new_hash = newest["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap();
    let pod = eventually("the controller's pod on worker-1", || {
        let pods = srv.kubectl_json(&["get", "pods", "-o", "json"]);
        pods["items"].as_array()?.iter().find_map(|p| {
            (p["spec"]["nodeName"] == "worker-1"
                && p["metadata"]["labels"]["controller-revision-hash"] == new_hash
                && p["metadata"]["ownerReferences"][0]["name"] == "node-monitor")
                .then(|| p["metadata"]["name"].as_str().unwrap().to_string())
        })
    });
    assert!(pod.starts_with("node-monitor-"), "{pod}");
    let status = r#"{"status": {"phase": "Running", "podIP": "10.0.0.5", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-24T00:00:00Z"}],
        "containerStatuses": [{"name": "node-monitor-agent", "image": "monitoring-agent:v2", "imageID": "", "ready": true, "restartCount": 3, "state": {"running": {}}}]}}"#;
    srv.kubectl_ok(&[
        "patch",
        "pod",
        &pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
    eventually("pod counted ready, available and updated", || {
        let ds = srv.kubectl_json(&["get", "ds", "node-monitor", "-o", "json"]);
        let st = &ds["status"];
        (st["currentNumberScheduled"] == 1
            && st["numberReady"] == 1
            && st["numberAvailable"] == 1
            && st["updatedNumberScheduled"] == 1
            && st["numberUnavailable"] == 0)
            .then_some(())
    });
    let out = srv.kubectl_ok(&["rollout", "status", "ds/node-monitor", "--timeout=10s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let out = srv.kubectl_ok(&["get", "pods", "-l", "app=monitoring", "-o", "wide"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], [pod.as_str(), "1/1", "Running", "3"], "{out}");
    assert_eq!(&row[5..7], ["10.0.0.5", "worker-1"], "{out}");
    let out = srv.kubectl_ok(&[
        "get",
        "pods",
        "--field-selector",
        "spec.nodeName=worker-2",
        "-o",
        "name",
    ]);
    assert!(out.is_empty(), "{out}");
    let out = srv.kubectl_ok(&["get", "pods", "-l", "app=monitoring", "-o", "name"]);
    assert_eq!(out.trim(), format!("pod/{pod}"));

    srv.kubectl_ok(&["label", "node", "worker-1", "k-"]);
    let node = srv.kubectl_json(&["get", "node", "worker-1", "-o", "json"]);
    assert!(node["metadata"]["labels"].get("k").is_none());

    // Delete returns promptly and takes the revisions along.
    let t = Instant::now();
    let out = srv.kubectl_ok(&["delete", "ds", "kube-proxy"]);
    assert!(
        out.contains("daemonset.apps \"kube-proxy\" deleted"),
        "{out}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    let out = srv.kubectl(&["get", "ds", "kube-proxy"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
    eventually("kube-proxy revisions deleted", || {
        revisions_of(&srv, "kube-proxy").is_empty().then_some(())
    });
    srv.stop();
}

#[test]
fn kubectl_refused_inputs_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start(dir.path());
    let d = dir.path();
    let cases: [(&str, String, &str); 6] = [
        (
            "invalid yaml",
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: [name: x\n".into(),
            "yaml",
        ),
        (
            "unknown kind",
            NODE_MONITOR.replace("kind: DaemonSet", "kind: DaemonSett"),
            "DaemonSett",
        ),
        (
            "selector does not match template labels",
            NODE_MONITOR.replace(
                "        app: monitoring\n    spec:",
                "        app: other\n    spec:",
            ),
            "spec.template.metadata.labels",
        ),
        (
            "bad quantity",
            NODE_MONITOR.replace("\"100m\"", "\"100x\""),
            "spec.template.spec.containers[0].resources.limits",
        ),
        (
            "invalid name",
            NODE_MONITOR.replace("name: node-monitor\n", "name: Bad_Name\n"),
            "metadata.name",
        ),
        (
            "typo in a field",
            NODE_MONITOR.replace("image:", "imagez:"),
            "imagez",
        ),
    ];
    for (what, text, needle) in cases {
        let out = srv.kubectl(&["apply", "-f", &write(d, "bad.yaml", &text)]);
        assert!(!out.status.success(), "{what}: kubectl accepted it");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle),
            "{what}: error does not name {needle}: {err}"
        );
        let list = srv.kubectl_json(&["get", "ds", "-A", "-o", "json"]);
        assert_eq!(
            list["items"].as_array().unwrap().len(),
            0,
            "{what}: something was stored"
        );
    }
    // The same manifest without the mistakes goes in.
    let out = srv.kubectl_ok(&["apply", "-f", &write(d, "good.yaml", NODE_MONITOR)]);
    assert!(out.contains("created"), "{out}");
    srv.stop();
}

#[test]
fn server_policy_refuses_privileged_pods_and_host_paths() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start_with(
        dir.path(),
        Policy {
            allow_privileged: false,
            allow_host_path: false,
            ..Policy::default()
        },
    );
    let d = dir.path();
    let privileged = NODE_MONITOR.replace(
        "        image:",
        "        securityContext:\n          privileged: true\n        image:",
    );
    let host_path = NODE_MONITOR.replace(
        "      containers:",
        "      volumes:\n      - name: root\n        hostPath:\n          path: /\n      containers:",
    );
    assert_ne!(privileged, NODE_MONITOR);
    assert_ne!(host_path, NODE_MONITOR);
    for (what, text, needle) in [
        (
            "privileged",
            &privileged,
            "spec.template.spec.containers[0].securityContext.privileged: Forbidden: disallowed by cluster policy",
        ),
        (
            "hostPath",
            &host_path,
            "spec.template.spec.volumes[0].hostPath: Forbidden: disallowed by cluster policy",
        ),
    ] {
        let out = srv.kubectl(&["apply", "-f", &write(d, "p.yaml", text)]);
        assert!(!out.status.success(), "{what}: kubectl accepted it");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{what}: {err}");
        let list = srv.kubectl_json(&["get", "ds", "-A", "-o", "json"]);
        assert_eq!(list["items"].as_array().unwrap().len(), 0, "{what}: stored");
    }
    // a pod written directly is held to the same policy
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"x","securityContext":{"privileged":true}}]}}"#;
    let out = srv.kubectl_stdin(&["create", "-f", "-"], pod);
    assert!(!out.status.success(), "privileged pod accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("spec.containers[0].securityContext.privileged: Forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = srv.kubectl_ok(&["apply", "-f", &write(d, "good.yaml", NODE_MONITOR)]);
    assert!(out.contains("created"), "{out}");
    // updating it into a privileged pod template is refused too
    let out = srv.kubectl(&["apply", "-f", &write(d, "p.yaml", &privileged)]);
    assert!(!out.status.success(), "privileged update accepted");
    srv.stop();
}

fn watch_lines(addr: &Endpoint, query: &str) -> Vec<Value> {
    let (code, body) = get(
        addr,
        &format!("/api/v1/nodes?watch=true&timeoutSeconds=1&{query}"),
    );
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn post_node(addr: &Endpoint, name: &str) -> Value {
    let body = format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}"}}}}"#);
    let (code, resp) = http(
        addr,
        format!(
            "POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(code, 201, "{resp}");
    serde_json::from_str(&resp).unwrap()
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn watch_resumes_and_resource_versions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start(dir.path());
    let a = post_node(&srv.addr(), "a");
    let b = post_node(&srv.addr(), "b");
    let c = post_node(&srv.addr(), "c");
    assert!(rv_of(&a) < rv_of(&b) && rv_of(&b) < rv_of(&c));
    // Resume after a: b and c, in order.
    let ev = watch_lines(&srv.addr(), &format!("resourceVersion={}", rv_of(&a)));
    let names: Vec<(&str, &str)> = ev
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("ADDED", "b"), ("ADDED", "c")]);
    // resourceVersion 0: the current objects as ADDED.
    let ev = watch_lines(&srv.addr(), "resourceVersion=0");
    assert_eq!(ev.len(), 3);
    // A field-selected watch (what kubectl delete --wait uses).
    let ev = watch_lines(
        &srv.addr(),
        "resourceVersion=0&fieldSelector=metadata.name%3Db",
    );
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["object"]["metadata"]["name"], "b");
    // A list carries the store's resourceVersion: c's or later (the controllers write too: the
    // leader's Lease, the namespaces' kube-root-ca.crt).
    let (_, body) = get(&srv.addr(), "/api/v1/nodes");
    let list: Value = serde_json::from_str(&body).unwrap();
    assert!(rv_of(&list) >= rv_of(&c), "{list}");

    // Concurrent patches without a resourceVersion all apply (retried, not 409).
    let addr = &srv.addr();
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let body = format!(r#"{{"metadata":{{"labels":{{"l{i}":"x"}}}}}}"#);
                http(&addr, format!(
                    "PATCH /api/v1/nodes/c HTTP/1.1\r\nHost: x\r\nContent-Type: application/merge-patch+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ).as_bytes())
            })
        })
        .collect();
    for t in threads {
        let (code, body) = t.join().unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let (_, body) = get(addr, "/api/v1/nodes/c");
    let c2: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(c2["metadata"]["labels"].as_object().unwrap().len(), 16);
    // A stale resourceVersion in a patch is a precondition: 409.
    let body = format!(
        r#"{{"metadata":{{"resourceVersion":"{}","labels":{{"z":"z"}}}}}}"#,
        rv_of(&c)
    );
    let (code, resp) = http(addr, format!(
        "PATCH /api/v1/nodes/c HTTP/1.1\r\nHost: x\r\nContent-Type: application/merge-patch+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ).as_bytes());
    assert_eq!(code, 409, "{resp}");
    // Creating a namespaced object without a namespace in the URL is not allowed.
    let (code, _) = http(addr, b"POST /api/v1/pods HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    assert_eq!(code, 405);

    srv.stop();
    let srv = Srv::start(dir.path());
    let (code, body) = get(&srv.addr(), "/api/v1/nodes/b");
    assert_eq!(code, 200);
    let b2: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(b2["metadata"]["uid"], b["metadata"]["uid"]);
    let d = post_node(&srv.addr(), "d");
    assert!(
        rv_of(&d) > rv_of(&c),
        "resourceVersion went back after a restart"
    );
    // History older than the restart is gone: 410 Expired as an ERROR event.
    let ev = watch_lines(&srv.addr(), &format!("resourceVersion={}", rv_of(&a)));
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["type"], "ERROR");
    assert_eq!(ev[0]["object"]["code"], 410);
    assert_eq!(ev[0]["object"]["reason"], "Expired");
    // kubectl sees the objects of before the restart.
    let out = srv.kubectl_ok(&["get", "nodes", "-o", "name"]);
    assert_eq!(out.lines().count(), 4, "{out}");
    srv.stop();
}

#[test]
fn malformed_and_oversized_requests_get_status_answers() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start(dir.path());
    let addr = &srv.addr();
    let status = |code_body: (u16, String)| -> (u16, Value) {
        let v: Value = serde_json::from_str(&code_body.1).unwrap_or(Value::Null);
        (code_body.0, v)
    };
    // Garbage is refused by the HTTP layer without harm.
    let _ = http(addr, b"\x00\x01GARBAGE\r\n\r\n");
    let _ = http(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    );
    // Bad JSON.
    let (code, s) = status(http(addr, b"POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{nope"));
    assert_eq!(
        (code, s["kind"].as_str(), s["reason"].as_str()),
        (400, Some("Status"), Some("BadRequest"))
    );
    // YAML bodies are accepted; broken YAML is a 400 Status.
    let yaml = "apiVersion: v1\nkind: Node\nmetadata:\n  name: from-yaml\n";
    let (code, s) = status(http(addr, format!("POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{yaml}", yaml.len()).as_bytes()));
    assert_eq!(
        (code, s["metadata"]["name"].as_str()),
        (201, Some("from-yaml"))
    );
    let yaml = "kind: Node\nmetadata: [oops\n";
    let (code, s) = status(http(addr, format!("POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{yaml}", yaml.len()).as_bytes()));
    assert_eq!((code, s["reason"].as_str()), (400, Some("BadRequest")));
    // Oversized, announced and chunked.
    let (code, s) = status(http(addr, b"POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\nConnection: close\r\n\r\n{}"));
    assert_eq!(
        (code, s["reason"].as_str()),
        (413, Some("RequestEntityTooLarge"))
    );
    let mut big = b"POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        big.extend_from_slice(b"100000\r\n");
        big.extend(std::iter::repeat_n(b' ', 0x100000));
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b"0\r\n\r\n");
    let (code, s) = status(http(addr, &big));
    assert_eq!(
        (code, s["reason"].as_str()),
        (413, Some("RequestEntityTooLarge"))
    );
    // Unknown path, wrong method, wrong kind for the URL.
    let (code, s) = status(get(addr, "/apis/apps/v1/namespaces/default/frobs"));
    assert_eq!((code, s["reason"].as_str()), (404, Some("NotFound")));
    let (code, s) = status(http(
        addr,
        b"PUT /api HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(
        (code, s["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
    let body = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#;
    let (code, s) = status(http(addr, format!("POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes()));
    assert_eq!(
        (code, s["reason"].as_str()),
        (400, Some("BadRequest")),
        "{s}"
    );
    let (code, s) = status(get(addr, "/api/v1/namespaces/default/pods/nope"));
    assert_eq!((code, s["details"]["kind"].as_str()), (404, Some("pods")));
    // Still serving.
    assert_eq!(get(addr, "/healthz"), (200, "ok".to_string()));
    assert_eq!(get(addr, "/readyz").0, 200);
    srv.stop();
}

const NODE_MONITOR: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: node-monitor
  labels:
    app: monitoring
spec:
  selector:
    matchLabels:
      app: monitoring
  template:
    metadata:
      labels:
        app: monitoring
    spec:
      containers:
      - name: node-monitor-agent
        image: monitoring-agent:latest
        resources:
          limits:
            memory: \"200Mi\"
            cpu: \"100m\"
      nodeSelector:
        node-role.kubernetes.io/worker: \"true\"
";

const KUBE_PROXY: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-proxy
spec:
  selector:
    matchLabels:
      k8s-app: kube-proxy
  template:
    metadata:
      labels:
        k8s-app: kube-proxy
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - key: node-role.kubernetes.io/worker
                operator: In
                values:
                - \"true\"
      containers:
      - name: kube-proxy
        image: kube-proxy:latest
";

/// The kube crate (what the agent uses) against the server: kubeconfig, create, list, patch,
/// status replace and the runtime watcher (list + watch with bookmarks).
#[test]
fn kube_client_lists_watches_and_patches() {
    use futures::StreamExt;
    use k8s_openapi::api::apps::v1::DaemonSet;
    use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
    use kube::config::{KubeConfigOptions, Kubeconfig};
    use kube::runtime::watcher;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start(dir.path());
    let path = dir.path().join("admin.kubeconfig");
    srv.rt.block_on(async {
        let kc = Kubeconfig::read_from(&path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let api: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
        let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
        // The initial list ends with InitDone.
        loop {
            match events.next().await.unwrap().unwrap() {
                watcher::Event::InitDone => break,
                _ => continue,
            }
        }
        let ds: DaemonSet = serde_yaml::from_str(NODE_MONITOR).unwrap();
        let created = api.create(&PostParams::default(), &ds).await.unwrap();
        assert_eq!(created.metadata.generation, Some(1));
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let watcher::Event::Apply(d) = events.next().await.unwrap().unwrap() {
                    if d.metadata.name.as_deref() == Some("node-monitor") {
                        return d;
                    }
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(seen.metadata.uid, created.metadata.uid);
        let list = api
            .list(&ListParams::default().labels("app=monitoring"))
            .await
            .unwrap();
        assert_eq!(list.items.len(), 1);
        assert!(list.metadata.resource_version.is_some());
        let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
            {"name": "node-monitor-agent", "image": "monitoring-agent:v3"}]}}}});
        let patched = api
            .patch(
                "node-monitor",
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
            .unwrap();
        let c = &patched
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        assert_eq!(c.image.as_deref(), Some("monitoring-agent:v3"));
        assert!(
            c.resources.is_some(),
            "strategic merge kept the other container fields"
        );
        assert_eq!(patched.metadata.generation, Some(2));
        // A status write never changes spec or generation.
        let status = serde_json::json!({"status": {"numberReady": 7, "currentNumberScheduled": 0,
            "desiredNumberScheduled": 0, "numberMisscheduled": 0}});
        let after = api
            .patch_status(
                "node-monitor",
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .unwrap();
        assert_eq!(after.metadata.generation, Some(2));
        assert_eq!(after.spec, patched.spec);
        // A stale resourceVersion is a 409 Conflict.
        let mut stale = created.clone();
        stale.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        match api
            .replace("node-monitor", &PostParams::default(), &stale)
            .await
        {
            Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
            other => panic!("expected a conflict, got {other:?}"),
        }
        api.delete("node-monitor", &Default::default())
            .await
            .unwrap();
        let gone = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let watcher::Event::Delete(d) = events.next().await.unwrap().unwrap() {
                    return d;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(gone.metadata.name.as_deref(), Some("node-monitor"));
    });
    srv.stop();
}

/// The official Python client (`kubernetes`, in the virtual environment scripts/install-deps.sh
/// makes): tests/python_client.py.
#[test]
fn python_client_lists_creates_watches() {
    let python = common::python_client();
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start(dir.path());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python_client.py");
    let out = Command::new(python)
        .arg(script)
        .arg(dir.path().join("admin.kubeconfig"))
        .output()
        .unwrap();
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python client test failed");
    srv.stop();
}

#[test]
fn kubectl_namespaces_generate_name_and_server_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start(dir.path());
    let d = dir.path();
    let out = srv.kubectl_ok(&["get", "ns", "-o", "name"]);
    let mut names: Vec<&str> = out.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "namespace/default",
            "namespace/kube-node-lease",
            "namespace/kube-public",
            "namespace/kube-system"
        ]
    );
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n";
    assert!(srv
        .kubectl_ok(&["apply", "-f", &write(d, "ns.yaml", ns)])
        .contains("created"));

    let out = srv.kubectl_ok(&[
        "apply",
        "-n",
        "team-a",
        "--dry-run=server",
        "-f",
        &write(d, "nm.yaml", NODE_MONITOR),
    ]);
    assert!(out.contains("(server dry run)"), "{out}");
    let list = srv.kubectl_json(&["get", "ds", "-A", "-o", "json"]);
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "dry run stored something"
    );

    let generated = NODE_MONITOR.replace("  name: node-monitor\n", "  generateName: nm-\n");
    let out = srv.kubectl_ok(&[
        "create",
        "-n",
        "team-a",
        "-f",
        &write(d, "gen.yaml", &generated),
    ]);
    let name = out
        .trim()
        .strip_prefix("daemonset.apps/")
        .unwrap()
        .strip_suffix(" created")
        .unwrap();
    assert!(name.starts_with("nm-") && name.len() == 8, "{out}");
    srv.kubectl_ok(&["get", "ds", "-n", "team-a", name]);

    let out = srv.kubectl(&[
        "apply",
        "-n",
        "nope",
        "-f",
        &write(d, "nm.yaml", NODE_MONITOR),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("namespaces \"nope\" not found"));

    // kubectl create namespace sends protobuf.
    let out = srv.kubectl_ok(&["create", "namespace", "team-b"]);
    assert!(out.contains("namespace/team-b created"), "{out}");
    srv.kubectl_ok(&["get", "ns", "team-b"]);

    // Deleting a namespace deletes what is in it, at once.
    srv.kubectl_ok(&["delete", "ns", "team-a"]);
    let list = srv.kubectl_json(&["get", "ds", "-A", "-o", "json"]);
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    srv.stop();
}

/// The value of the sample `line_start` (its name and labels) in a Prometheus text.
fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

#[test]
fn kubectl_scrapes_the_servers_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start(dir.path());
    srv.kubectl_ok(&["create", "namespace", "metrics-probe"]);
    assert!(!srv.kubectl(&["get", "ds", "nope"]).status.success());
    // an open watch, counted while it lasts (no other test here watches controllerrevisions)
    let mut watch = Command::new(common::kubectl())
        .arg("--kubeconfig")
        .arg(srv.data.join("admin.kubeconfig"))
        .args(["get", "controllerrevisions", "-A", "--watch"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let watches = "apiserver_longrunning_requests{resource=\"controllerrevisions\",verb=\"WATCH\"}";
    let text = eventually("the watch counted", || {
        let text = srv.kubectl_ok(&["get", "--raw", "/metrics"]);
        (metric(&text, watches) >= Some(1.0)).then_some(text)
    });
    for family in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_threads",
        "tokio_runtime_workers",
        "tokio_runtime_alive_tasks",
        "apiserver_request_total",
        "apiserver_request_duration_seconds",
        "apiserver_longrunning_requests",
        "apiserver_storage_objects",
    ] {
        let ty = format!("# TYPE {family} ");
        assert!(
            text.lines().any(|l| l.starts_with(&ty)),
            "{family} in\n{text}"
        );
    }
    assert!(metric(&text, "process_resident_memory_bytes") > Some(0.0));
    assert!(metric(&text, "tokio_runtime_alive_tasks") > Some(0.0));
    let created = "apiserver_request_total{code=\"201\",resource=\"namespaces\",subresource=\"\",verb=\"POST\"}";
    assert!(metric(&text, created) >= Some(1.0), "{text}");
    let missing = "apiserver_request_total{code=\"404\",resource=\"daemonsets\",subresource=\"\",verb=\"GET\"}";
    assert!(metric(&text, missing) >= Some(1.0), "{text}");
    let listed = "apiserver_request_duration_seconds_count{resource=\"controllerrevisions\",subresource=\"\",verb=\"WATCH\"}";
    assert!(metric(&text, listed) >= Some(1.0), "{text}");
    // default, kube-system, kube-public, kube-node-lease and ours
    let namespaces = "apiserver_storage_objects{resource=\"namespaces\"}";
    assert_eq!(metric(&text, namespaces), Some(5.0), "{text}");
    watch.kill().unwrap();
    watch.wait().unwrap();
    eventually("the watch uncounted", || {
        let text = srv.kubectl_ok(&["get", "--raw", "/metrics"]);
        (metric(&text, watches) == Some(0.0)).then_some(())
    });
    // authenticated, and only for those who may read it
    let (code, _) = srv.addr().with_token(None).get("/metrics");
    assert_eq!(code, 401);
    srv.stop();
}

#[test]
fn revisions_are_pruned_to_the_history_limit_and_reused_on_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start(dir.path());
    let d = dir.path();
    let base = KUBE_PROXY.replace(
        "spec:\n  selector:",
        "spec:\n  revisionHistoryLimit: 1\n  selector:",
    );
    for (i, tag) in ["v1", "v2", "v3"].iter().enumerate() {
        let text = base.replace("kube-proxy:latest", &format!("kube-proxy:{tag}"));
        srv.kubectl_ok(&["apply", "-f", &write(d, "kp.yaml", &text)]);
        eventually("revision for the new template", || {
            let revs = revisions_of(&srv, "kube-proxy");
            revs.iter()
                .any(|r| r["revision"] == i as i64 + 1)
                .then_some(())
        });
    }
    let revs = eventually("pruned to current + 1", || {
        let r = revisions_of(&srv, "kube-proxy");
        (r.len() == 2).then_some(r)
    });
    let mut numbers: Vec<i64> = revs
        .iter()
        .map(|r| r["revision"].as_i64().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, [2, 3]);
    // Back to v2: its revision is reused and becomes the newest.
    let out = srv.kubectl_ok(&["rollout", "undo", "ds/kube-proxy"]);
    assert!(out.contains("rolled back"), "{out}");
    let ds = srv.kubectl_json(&["get", "ds", "kube-proxy", "-o", "json"]);
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["image"],
        "kube-proxy:v2"
    );
    eventually("v2 revision renumbered 4", || {
        let r = revisions_of(&srv, "kube-proxy");
        r.iter()
            .any(|c| {
                c["revision"] == 4
                    && c["data"]["spec"]["template"]["spec"]["containers"][0]["image"]
                        == "kube-proxy:v2"
            })
            .then_some(())
    });
    srv.stop();
}

// ---- TLS, tokens, node identity and authorization ----

/// `daemonset-agent ARGS` (the binary of this build); stdout, panicking on failure.
fn dsa(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_daemonset-agent"))
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "$ daemonset-agent {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "daemonset-agent {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

fn reason(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    assert_eq!(v["kind"], "Status", "{body}");
    (
        v["reason"].as_str().unwrap_or("").to_string(),
        v["message"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn unauthenticated_wrong_expired_and_revoked_tokens_get_401_and_plain_http_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start(dir.path());
    let admin = srv.addr();
    let kubeconfig = srv.data.join("admin.kubeconfig");
    let kc = kubeconfig.to_str().unwrap();
    // the store and the admin kubeconfig are the owner's only
    for f in [
        &kubeconfig,
        &srv.data.join("state.db"),
        &srv.data.join("tls/ca.key"),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    // health and version need nothing; everything else a credential
    let nobody = admin.with_token(None);
    assert_eq!(nobody.get("/healthz"), (200, "ok".to_string()));
    assert_eq!(nobody.get("/version").0, 200);
    let (code, body) = nobody.get("/api/v1/nodes");
    assert_eq!((code, reason(&body).0.as_str()), (401, "Unauthorized"));
    let wrong = admin.with_token(Some("abcdef.0123456789abcdef"));
    assert_eq!(wrong.get("/api/v1/nodes").0, 401);
    // an expired token
    let (code, body) = admin.send(
        "POST",
        "/api/v1/namespaces/kube-system/secrets",
        "application/json",
        r#"{"metadata":{"name":"token-old123","namespace":"kube-system"},"type":"daemonset-agent.io/token",
            "stringData":{"token-id":"old123","token-secret":"0123456789abcdef","role":"view","expiration":"2020-01-01T00:00:00Z"}}"#,
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        admin
            .with_token(Some("old123.0123456789abcdef"))
            .get("/api/v1/nodes")
            .0,
        401
    );
    // a view token reads everything but Secrets and writes nothing; deleted, it is refused
    let view = dsa(&[
        "token",
        "create",
        "--kubeconfig",
        kc,
        "--role",
        "view",
        "--description",
        "dashboard",
    ]);
    let view_ep = admin.with_token(Some(view.trim()));
    assert_eq!(view_ep.get("/api/v1/nodes").0, 200);
    let (code, body) = view_ep.get("/api/v1/namespaces/kube-system/secrets");
    assert_eq!((code, reason(&body).0.as_str()), (403, "Forbidden"));
    assert_eq!(
        view_ep
            .send(
                "POST",
                "/api/v1/nodes",
                "application/json",
                r#"{"metadata":{"name":"v"}}"#
            )
            .0,
        403
    );
    let listed = dsa(&["token", "list", "--kubeconfig", kc]);
    let id = view.trim().split('.').next().unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(id) && l.contains("view") && l.contains("dashboard")),
        "{listed}"
    );
    assert!(
        !listed.contains(view.trim()),
        "token list never shows a secret"
    );
    dsa(&["token", "delete", "--kubeconfig", kc, id]);
    assert_eq!(view_ep.get("/api/v1/nodes").0, 401);
    // the stored records hold no secret
    let secrets = srv.kubectl_ok(&["get", "secrets", "-n", "kube-system", "-o", "json"]);
    assert!(!secrets.contains("0123456789abcdef"), "{secrets}");
    // plain HTTP to the TLS port: an HTTP 400 and nothing of the API
    let mut plain = std::net::TcpStream::connect(admin.addr).unwrap();
    plain
        .write_all(b"GET /api/v1/nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.0 400"), "{text}");
    assert!(
        !text.contains("NodeList") && !text.contains("apiVersion"),
        "{text}"
    );
    // kubectl 1.27 and the newest, with verification on, as admin
    for kubectl in [
        common::kubectl_release("1.27"),
        common::kubectl().to_path_buf(),
    ] {
        let out = Command::new(&kubectl)
            .args(["--kubeconfig", kc, "auth", "can-i", "delete", "nodes"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "yes",
            "{}",
            kubectl.display()
        );
        let out = Command::new(&kubectl)
            .args(["--kubeconfig", kc, "get", "namespaces", "-o", "name"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("namespace/kube-system"),
            "{}: {}",
            kubectl.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    srv.stop();
}

#[test]
fn a_node_joins_with_a_token_and_may_touch_only_what_is_its_own() {
    use daemonset_agent::agent::join;
    use daemonset_agent::core::credential::JoinToken;
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start(&dir.path().join("server"));
    let admin = srv.addr();
    let kc = srv.data.join("admin.kubeconfig");
    let kc = kc.to_str().unwrap();
    let url = format!("https://{}", admin.addr);
    let join = JoinToken::parse(&dsa(&[
        "token",
        "create",
        "--kubeconfig",
        kc,
        "--ttl",
        "1h",
    ]))
    .unwrap();
    // another server (another CA): refused before anything is sent, naming both CAs
    let other = Srv::start(&dir.path().join("other"));
    let other_url = format!("https://{}", other.addr().addr);
    let state_b = dir.path().join("agent-b");
    let e = srv
        .rt
        .block_on(join::connect(&other_url, &join, "node-b", &state_b))
        .err()
        .expect("a server with another CA is refused");
    let msg = e.to_string();
    let other_ca = JoinToken::parse(&dsa(&[
        "token",
        "create",
        "--kubeconfig",
        other.data.join("admin.kubeconfig").to_str().unwrap(),
    ]))
    .unwrap()
    .ca;
    assert!(
        msg.contains(&join.ca.to_string()) && msg.contains(&other_ca.to_string()),
        "{msg}"
    );
    assert!(!state_b.join("pki/node.crt").exists());
    other.stop();

    // node-a joins: its own key and certificate, private, CN=system:node:node-a
    let state_a = dir.path().join("agent-a");
    let joined = srv
        .rt
        .block_on(join::connect(&url, &join, "node-a", &state_a))
        .unwrap();
    let files = join::NodeFiles::new(&state_a);
    for f in [files.key(), files.cert(), files.ca(), files.kubeconfig()] {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            f.display()
        );
    }
    let out = Command::new(common::kubectl())
        .arg("--kubeconfig")
        .arg(files.kubeconfig())
        .args(["auth", "whoami", "-o", "json"])
        .output()
        .unwrap();
    let who: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:node:node-a",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node_a = admin.with_cert(
        &std::fs::read_to_string(files.cert()).unwrap(),
        &std::fs::read_to_string(files.key()).unwrap(),
    );
    // its own Node: yes; another's: 403 in kube-apiserver's words, nothing changed
    let (code, body) = node_a.send(
        "POST",
        "/api/v1/nodes",
        "application/json",
        r#"{"metadata":{"name":"node-a"}}"#,
    );
    assert_eq!(code, 201, "{body}");
    post_node(&admin, "node-b");
    let (code, body) = node_a.send(
        "PATCH",
        "/api/v1/nodes/node-b",
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        reason(&body).1,
        "nodes \"node-b\" is forbidden: User \"system:node:node-a\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope"
    );
    let (_, body) = admin.get("/api/v1/nodes/node-b");
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["metadata"]["labels"]
            .get("x")
            .is_none()
    );
    // no DaemonSets made or deleted, no Secrets read, no pods made
    srv.kubectl_stdin(&["apply", "-f", "-"], NODE_MONITOR);
    let ds = serde_json::to_string(&serde_yaml::from_str::<Value>(NODE_MONITOR).unwrap()).unwrap();
    assert_eq!(
        node_a
            .send(
                "POST",
                "/apis/apps/v1/namespaces/default/daemonsets",
                "application/json",
                &ds
            )
            .0,
        403
    );
    assert_eq!(
        node_a
            .send(
                "DELETE",
                "/apis/apps/v1/namespaces/default/daemonsets/node-monitor",
                "application/json",
                ""
            )
            .0,
        403
    );
    assert_eq!(
        admin
            .get("/apis/apps/v1/namespaces/default/daemonsets/node-monitor")
            .0,
        200
    );
    assert_eq!(node_a.get("/api/v1/namespaces/kube-system/secrets").0, 403);
    let pod = r#"{"metadata":{"name":"p"},"spec":{"nodeName":"node-a","containers":[{"name":"c","image":"busybox:v1"}]}}"#;
    assert_eq!(
        node_a
            .send(
                "POST",
                "/api/v1/namespaces/default/pods",
                "application/json",
                pod
            )
            .0,
        403
    );
    // reads a node needs: DaemonSets, Nodes, its pods by field selector (not all pods)
    assert_eq!(node_a.get("/apis/apps/v1/daemonsets").0, 200);
    assert_eq!(
        node_a
            .get("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a")
            .0,
        200
    );
    assert_eq!(node_a.get("/api/v1/pods").0, 403);
    // kubectl auth can-i answers for the node what the server does
    let can = |args: &[&str]| {
        let out = Command::new(common::kubectl())
            .arg("--kubeconfig")
            .arg(files.kubeconfig())
            .args(["auth", "can-i"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(can(&["patch", "nodes/node-a"]), "yes");
    assert_eq!(can(&["patch", "nodes/node-b"]), "no");
    assert_eq!(can(&["create", "daemonsets.apps"]), "no");

    // the join token deleted: node-a keeps working, a new join is refused (401)
    dsa(&["token", "delete", "--kubeconfig", kc, &join.token.id]);
    assert_eq!(node_a.get("/api/v1/nodes/node-a").0, 200);
    let e = srv
        .rt
        .block_on(join::connect(
            &url,
            &join,
            "node-c",
            &dir.path().join("agent-c"),
        ))
        .err()
        .expect("a deleted token joins no node");
    assert!(format!("{e:?}").contains("401"), "{e:?}");
    // renewal with the current certificate: a new certificate, the client keeps working
    let before = std::fs::read_to_string(files.cert()).unwrap();
    srv.rt.block_on(joined.renew()).unwrap();
    assert_ne!(std::fs::read_to_string(files.cert()).unwrap(), before);
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(joined.client.clone());
    srv.rt.block_on(nodes.get("node-a")).unwrap();
    // revoked: every certificate of node-a is refused
    dsa(&["node", "revoke", "--kubeconfig", kc, "node-a"]);
    assert_eq!(node_a.get("/api/v1/nodes/node-a").0, 401);
    let e = srv.rt.block_on(nodes.get("node-a")).unwrap_err();
    assert!(format!("{e:?}").contains("401"), "{e:?}");
    srv.stop();
}
