//! Init containers, sidecars and lifecycle hooks end to end, with real parts only: the
//! `daemonset-agent` binary as server and agent on a containerd of the test's own (runc), the
//! loopback registry's busybox image, the real kubectl. The pods use the host's network (the pod
//! network has tests of its own in workloads.rs), and record what happened in them in a hostPath
//! directory of the test's own, read here.
//!
//! Why the waits are enough: a container exit reaches the agent through containerd's event
//! stream and starts a round at once; the back-offs are the kubelet's (10 s, then 20 s), so a
//! container failing twice is running again within 40 s; the waits allow 120 s on a loaded
//! 2-core machine.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::proc::Proc;
use common::{wait_for, Containerd};
use serde_json::Value;

const NODE: &str = "init-node";

struct Cluster {
    /// First, so it drops first: removes everything the test made, pass or fail.
    _guard: common::Guard,
    dir: tempfile::TempDir,
    _ctd: Containerd,
    _server: Proc,
    agent: Proc,
    /// The agent's command line, to start it again.
    agent_args: Vec<String>,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn start() -> Cluster {
        let ctd = Containerd::start();
        let dir = tempfile::Builder::new()
            .prefix("dsa-e2e-init-")
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
        wait_for("the server to answer", Duration::from_secs(30), || {
            kubeconfig.exists().then_some(())
        });
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, "container-logs-to-journald = false\n").unwrap();
        let state = dir.path().join("agent");
        let ns = format!(
            "dsa-test-init-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let agent_args: Vec<String> = [
            "agent",
            "--config",
            config.to_str().unwrap(),
            "--node-name",
            NODE,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--containerd-socket",
            ctd.socket.to_str().unwrap(),
            "--containerd-namespace",
            &ns,
            "--state-dir",
            state.to_str().unwrap(),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
        let agent = Proc::spawn(&args, dir.path().join("agent.log"));
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        let c = Cluster {
            _guard: common::Guard::new().containerd(&ctd).dir(dir.path()),
            dir,
            _ctd: ctd,
            _server: server,
            agent,
            agent_args,
            kubeconfig,
        };
        wait_for("the node to register", Duration::from_secs(30), || {
            c.kubectl(&["get", "node", NODE])
                .status
                .success()
                .then_some(())
        });
        c
    }

    /// Kills the agent (its containers keep running) and starts it again: it adopts them.
    fn restart_agent(&mut self) {
        self.agent.kill();
        let args: Vec<&str> = self.agent_args.iter().map(String::as_str).collect();
        self.agent = Proc::spawn(&args, self.dir.path().join("agent-2.log"));
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(common::kubectl())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    fn apply(&self, yaml: &str) {
        let f = self
            .dir
            .path()
            .join(format!("{:08x}.yaml", rand::random::<u32>()));
        std::fs::write(&f, yaml).unwrap();
        let out = self.kubectl(&["apply", "-f", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The hostPath directory the pods write into.
    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// The first pod whose name starts with `prefix`, as JSON.
    fn pod(&self, prefix: &str) -> Option<Value> {
        let out = self.kubectl(&["get", "pods", "-o", "json"]);
        let list: Value = serde_json::from_slice(&out.stdout).ok()?;
        list["items"]
            .as_array()?
            .iter()
            .find(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .cloned()
    }

    /// The STATUS column `kubectl get pods` prints for the pod named `name`.
    fn status_column(&self, name: &str) -> Option<String> {
        let out = self.kubectl(&["get", "pod", name, "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace().nth(2).map(str::to_string)
    }

    /// Waits for `f` on the pod starting with `prefix`, saying what the pod and agent were.
    fn wait_pod<T>(&self, what: &str, prefix: &str, mut f: impl FnMut(&Value) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let pod = self.pod(prefix);
            if let Some(t) = pod.as_ref().and_then(&mut f) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not after 120s: {}\n--- agent ---\n{}",
                serde_json::to_string_pretty(&pod).unwrap(),
                self.agent.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Deletes pod `name` and waits until it is gone; how long that took.
    fn delete_pod(&self, name: &str) -> Duration {
        let start = Instant::now();
        let out = self.kubectl(&["delete", "pod", name, "--wait=true", "--timeout=120s"]);
        assert!(
            out.status.success(),
            "kubectl delete pod {name}: {}\n--- agent ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.agent.log_tail(60)
        );
        start.elapsed()
    }
}

fn image() -> String {
    format!("{}/busybox:v1", common::registry())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn condition<'a>(pod: &'a Value, type_: &str) -> Option<&'a str> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
}

/// A bare pod bound to the node: `spec` is YAML indented by four spaces below `spec:`.
fn bare_pod(name: &str, out: &Path, grace: u32, spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {NODE}
  hostNetwork: true
  terminationGracePeriodSeconds: {grace}
  volumes:
  - name: out
    hostPath: {{path: {out}, type: Directory}}
{spec}"#,
        out = out.display()
    )
}

/// A cluster running bare pod `name` (grace period `grace`) of `spec` (YAML below `spec:`,
/// indented by two spaces, `IMAGE` standing for the busybox image), and the pod's output
/// directory.
fn cluster_with_pod(name: &str, grace: u32, spec: impl AsRef<str>) -> (Cluster, PathBuf) {
    let c = Cluster::start();
    let out = c.out();
    c.apply(&bare_pod(
        name,
        &out,
        grace,
        &spec.as_ref().replace("IMAGE", &image()),
    ));
    (c, out)
}

/// The DaemonSet of issue 11: its init container writes the page the app container serves,
/// naming the node and the pod's IP it learnt through fieldRef; the init container ran once,
/// completed, and the pod is initialized.
#[test]
fn init_container_output_served_by_the_app_with_node_name_and_pod_ip() {
    let c = Cluster::start();
    let port = common::free_port();
    let yaml = format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: page
spec:
  selector:
    matchLabels: {{app: page}}
  template:
    metadata:
      labels: {{app: page}}
    spec:
      hostNetwork: true
      volumes:
      - name: www
        emptyDir: {{}}
      initContainers:
      - name: write-page
        image: {image}
        env:
        - name: NODE_NAME
          valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}
        - name: POD_IP
          valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
        command: [sh, -c, 'echo "node=$NODE_NAME ip=$POD_IP" > /www/index.html']
        volumeMounts: [{{name: www, mountPath: /www}}]
      containers:
      - name: web
        image: {image}
        command: [httpd, -f, -p, '127.0.0.1:{port}', -h, /www]
        volumeMounts: [{{name: www, mountPath: /www}}]
        readinessProbe:
          httpGet: {{host: 127.0.0.1, path: /, port: {port}}}
          periodSeconds: 1
"#,
        image = image()
    );
    c.apply(&yaml);
    let pod = c.wait_pod("the pod to be ready", "page-", |p| {
        (condition(p, "Ready") == Some("True")).then(|| p.clone())
    });
    let ip = pod["status"]["podIP"].as_str().expect("status.podIP");
    let page = common::http_get(&format!("127.0.0.1:{port}"), "/").expect("GET the page");
    assert!(
        page.ends_with(&format!("\r\n\r\nnode={NODE} ip={ip}\n")),
        "{page}"
    );
    let init = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(init["name"], "write-page", "{init}");
    assert_eq!(init["state"]["terminated"]["exitCode"], 0, "{init}");
    assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{init}");
    assert_eq!(
        (init["ready"].clone(), init["restartCount"].clone()),
        (Value::Bool(true), 0.into())
    );
    assert_eq!(condition(&pod, "Initialized"), Some("True"));
    assert_eq!(pod["status"]["phase"], "Running");
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert_eq!(c.status_column(name).as_deref(), Some("Running"));
}

/// An init container that fails twice, then succeeds: retried with the pod's back-off, its
/// restarts counted, the pod Pending and not initialized meanwhile, and `kubectl get pods`
/// printing the kubelet's strings on the way (`Init:0/1`, `Init:CrashLoopBackOff`). Each run
/// takes 2 s, so that the running init container is there to be seen. An agent restarted then
/// adopts the pod and does not run the completed init container again.
#[test]
fn a_failing_init_container_is_retried_with_back_off() {
    let (mut c, out) = cluster_with_pod(
        "flaky",
        1,
        r#"  initContainers:
  - name: flaky
    image: IMAGE
    command: [sh, -c, 'n=$(cat /out/runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > /out/runs; sleep 2; [ $n -ge 3 ]']
    volumeMounts: [{name: out, mountPath: /out}]
  containers:
  - name: app
    image: IMAGE
    command: [sh, -c, 'echo app >> /out/app; while [ ! -f /out/stop-app ]; do sleep 0.1; done; rm /out/stop-app; exit 1']
    volumeMounts: [{name: out, mountPath: /out}]
"#,
    );
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let pod = loop {
        if let Some(s) = c.status_column("flaky") {
            seen.insert(s);
        }
        let pod = c.pod("flaky").expect("the pod");
        if pod["status"]["phase"] == "Pending" && read(&out.join("runs")).trim() == "2" {
            // failed twice and backing off: not initialized, the app not started
            assert_eq!(condition(&pod, "Initialized"), Some("False"), "{pod}");
            assert_eq!(read(&out.join("app")), "");
        }
        if condition(&pod, "Ready") == Some("True") {
            break pod;
        }
        assert!(
            Instant::now() < deadline,
            "not ready after 120s (seen {seen:?}): {pod}\n--- agent ---\n{}",
            c.agent.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Some(s) = c.status_column("flaky") {
        seen.insert(s);
    }
    assert_eq!(read(&out.join("runs")).trim(), "3");
    assert_eq!(
        read(&out.join("app")),
        "app\n",
        "the app started once, after init"
    );
    let init = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(init["restartCount"], 2, "{init}");
    assert_eq!(init["state"]["terminated"]["exitCode"], 0, "{init}");
    assert_eq!(init["lastState"]["terminated"]["exitCode"], 1, "{init}");
    for s in ["Init:0/1", "Init:CrashLoopBackOff", "Running"] {
        assert!(seen.contains(s), "kubectl never printed {s}: {seen:?}");
    }
    assert!(
        seen.iter().all(|s| s.starts_with("Init:")
            || ["Pending", "PodInitializing", "Running"].contains(&s.as_str())),
        "{seen:?}"
    );
    // a restarted agent adopts the pod: the completed init container is not run again, also
    // when the app container dies and is restarted by the new agent
    c.restart_agent();
    std::fs::write(out.join("stop-app"), "").unwrap();
    let pod = c.wait_pod("the app restarted by the new agent", "flaky", |p| {
        let app = &p["status"]["containerStatuses"][0];
        (app["restartCount"] == 1 && app["state"]["running"].is_object()).then(|| p.clone())
    });
    assert_eq!(read(&out.join("app")), "app\napp\n");
    assert_eq!(
        read(&out.join("runs")).trim(),
        "3",
        "the init container ran no more"
    );
    let init = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(init["restartCount"], 2, "{init}");
    assert_eq!(init["state"]["terminated"]["exitCode"], 0, "{init}");
}

/// A restartable init container (a sidecar) runs beside the app: the init container after it
/// starts only once it runs, it stays running (READY 2/2), and when the pod is deleted it is
/// stopped after the app container.
#[test]
fn sidecar_init_container_runs_beside_the_app() {
    let (c, out) = cluster_with_pod(
        "sidecar",
        10,
        r#"  initContainers:
  - name: side
    image: IMAGE
    restartPolicy: Always
    command: [sh, -c, 'trap "echo side-stopped >> /out/order; exit 0" TERM; echo up > /out/side-up; while true; do sleep 0.1; done']
    volumeMounts: [{name: out, mountPath: /out}]
  - name: after-side
    image: IMAGE
    command: [sh, -c, 'cat /out/side-up > /out/init-saw']
    volumeMounts: [{name: out, mountPath: /out}]
  containers:
  - name: app
    image: IMAGE
    command: [sh, -c, 'trap "sleep 1; echo app-stopped >> /out/order; exit 0" TERM; while true; do sleep 0.1; done']
    volumeMounts: [{name: out, mountPath: /out}]
"#,
    );
    let pod = c.wait_pod("both to run", "sidecar", |p| {
        (condition(p, "Ready") == Some("True")).then(|| p.clone())
    });
    assert_eq!(
        read(&out.join("init-saw")),
        "up\n",
        "the next init container ran after the sidecar started"
    );
    let side = &pod["status"]["initContainerStatuses"][0];
    assert!(side["state"]["running"].is_object(), "{side}");
    assert_eq!(
        (side["started"].clone(), side["ready"].clone()),
        (Value::Bool(true), Value::Bool(true)),
        "{side}"
    );
    let after = &pod["status"]["initContainerStatuses"][1];
    assert_eq!(after["state"]["terminated"]["exitCode"], 0, "{after}");
    let row = c.kubectl(&["get", "pod", "sidecar", "--no-headers"]);
    let row = String::from_utf8_lossy(&row.stdout).to_string();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..3], ["2/2", "Running"], "{row}");
    c.delete_pod("sidecar");
    assert_eq!(
        read(&out.join("order")),
        "app-stopped\nside-stopped\n",
        "the sidecar stops after the app"
    );
}

/// A postStart hook runs in the container right after it started; the app sees what it wrote.
#[test]
fn post_start_writes_a_file_the_app_sees() {
    let (c, out) = cluster_with_pod(
        "poststart",
        1,
        r#"  containers:
  - name: app
    image: IMAGE
    command: [sh, -c, 'while [ ! -f /tmp/hooked ]; do sleep 0.1; done; cat /tmp/hooked > /out/app-saw; exec sleep 1000']
    volumeMounts: [{name: out, mountPath: /out}]
    lifecycle:
      postStart:
        exec: {command: [sh, -c, 'echo hooked > /tmp/hooked']}
"#,
    );
    wait_for(
        "the app to see the hook's file",
        Duration::from_secs(120),
        || (read(&out.join("app-saw")) == "hooked\n").then_some(()),
    );
    let pod = c.wait_pod("the pod to run", "poststart", |p| {
        (p["status"]["phase"] == "Running").then(|| p.clone())
    });
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
}

/// Runs bare pod `name` (grace period `grace`) whose app traps TERM and whose preStop hook runs
/// `hook`, both appending to one file, deletes it once it runs: what the file says then, and how
/// long the delete took.
fn deleted_with_pre_stop(name: &str, grace: u32, hook: &str) -> (String, Duration) {
    let (c, out) = cluster_with_pod(
        name,
        grace,
        r#"  containers:
  - name: app
    image: IMAGE
    command: [sh, -c, 'trap "echo sigterm >> /out/order; exit 0" TERM; echo running > /out/running; while true; do sleep 0.1; done']
    volumeMounts: [{name: out, mountPath: /out}]
    lifecycle:
      preStop:
        exec: {command: [sh, -c, 'HOOK']}
"#
        .replace("HOOK", hook),
    );
    wait_for("the app to run", Duration::from_secs(120), || {
        (read(&out.join("running")) == "running\n").then_some(())
    });
    let took = c.delete_pod(name);
    (read(&out.join("order")), took)
}

/// A postStart hook that fails kills its container, which is restarted with back-off: each
/// start is counted in a file, the status counts the restarts and says why.
#[test]
fn a_failed_post_start_hook_kills_and_restarts_the_container() {
    let (c, out) = cluster_with_pod(
        "badhook",
        1,
        r#"  containers:
  - name: app
    image: IMAGE
    command: [sh, -c, 'echo start >> /out/starts; exec sleep 1000']
    volumeMounts: [{name: out, mountPath: /out}]
    lifecycle:
      postStart:
        exec: {command: [sh, -c, 'echo hook failed >&2; exit 7']}
"#,
    );
    let pod = c.wait_pod(
        "the container restarted after a failed hook",
        "badhook",
        |p| {
            let app = &p["status"]["containerStatuses"][0];
            (app["restartCount"].as_i64() >= Some(1) && app["state"]["waiting"].is_object())
                .then(|| p.clone())
        },
    );
    let app = &pod["status"]["containerStatuses"][0];
    let reason = app["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        ["PostStartHookError", "CrashLoopBackOff"].contains(&reason),
        "{app}"
    );
    assert!(app["lastState"]["terminated"].is_object(), "killed: {app}");
    assert!(read(&out.join("starts")).lines().count() >= 2);
    assert_eq!(pod["status"]["phase"], "Running", "it ran once");
}

/// The preStop hook runs before the container gets its SIGTERM: the hook and the container's
/// TERM trap append to one file, in that order.
#[test]
fn pre_stop_runs_before_sigterm() {
    let (order, took) = deleted_with_pre_stop("prestop", 20, "echo prestop >> /out/order");
    assert_eq!(order, "prestop\nsigterm\n");
    assert!(
        took < Duration::from_secs(20),
        "the trap ended it at once: {took:?}"
    );
}

/// A preStop hook longer than the grace period is cut at it: the SIGTERM comes after the grace
/// period (3 s) and the kubelet's 2 s minimum, not after the hook's 60 s.
#[test]
fn pre_stop_longer_than_the_grace_period_is_cut_at_it() {
    let (order, took) = deleted_with_pre_stop(
        "longstop",
        3,
        "echo prestop >> /out/order; sleep 60; echo prestop-ended >> /out/order",
    );
    assert_eq!(order, "prestop\nsigterm\n");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(30),
        "deleted in {took:?}: the hook's 3 s, then the SIGTERM"
    );
}

/// An httpGet preStop hook reaches the container at the pod's IP (the node's, with the host's
/// network) before the SIGTERM: the CGI script it requests and the TERM trap append to one file.
#[test]
fn http_pre_stop_reaches_the_pod_before_sigterm() {
    let port = common::free_port();
    let (c, out) = cluster_with_pod(
        "httphook",
        20,
        r##"  containers:
  - name: app
    image: IMAGE
    command: [sh, -c, 'mkdir -p /www/cgi-bin && printf "#!/bin/sh\necho Content-Type: text/plain\necho\necho hooked >> /out/order\n" > /www/cgi-bin/hook && chmod +x /www/cgi-bin/hook && httpd -p PORT -h /www && trap "echo sigterm >> /out/order; exit 0" TERM && echo running > /out/running && while true; do sleep 0.1; done']
    volumeMounts: [{name: out, mountPath: /out}]
    lifecycle:
      preStop:
        httpGet: {path: /cgi-bin/hook, port: PORT}
"##
        .replace("PORT", &port.to_string()),
    );
    wait_for("the app to run", Duration::from_secs(120), || {
        (read(&out.join("running")) == "running\n").then_some(())
    });
    c.delete_pod("httphook");
    assert_eq!(read(&out.join("order")), "hooked\nsigterm\n");
}
