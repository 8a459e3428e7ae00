//! The node API behind the server, with real parts only: the `daemonset-agent` binary as server
//! and as two joined agents (each its own node API on a loopback port, its own containerd
//! namespace on one real containerd + runc), images from a real loopback registry, and the real
//! kubectl (the newest and 1.27) with default flags: `kubectl logs` in its variants, a node's
//! credential refused, the agent down and back; `exec` (WebSocket from 1.30 on, SPDY before;
//! output, exit code, stdin, a terminal under Python's pty), the Python client's `stream`,
//! `attach`, `port-forward` and `cp` both ways, a viewer refused exec.
mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::proc::Proc;
use common::{wait_for, Containerd};

struct Cluster {
    /// First, so it drops first: removes everything below and all the test made, pass or fail.
    _guard: common::Guard,
    dir: tempfile::TempDir,
    ctd: Containerd,
    server: Proc,
    kubeconfig: PathBuf,
    server_url: String,
    token: String,
    agents: Vec<(String, Proc)>,
}

impl Cluster {
    fn start() -> Cluster {
        let ctd = Containerd::start();
        let dir = tempfile::Builder::new()
            .prefix("dsa-nodeapi-")
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
        let mut c = Cluster {
            _guard: common::Guard::new().containerd(&ctd).dir(dir.path()),
            dir,
            ctd,
            server,
            kubeconfig,
            server_url: format!("https://{listen}"),
            token: String::new(),
            agents: vec![],
        };
        wait_for("the server to answer", Duration::from_secs(20), || {
            (c.kubeconfig.exists() && c.kubectl(&["get", "--raw", "/readyz"]).status.success())
                .then_some(())
        });
        let out = Command::new(env!("CARGO_BIN_EXE_daemonset-agent"))
            .args(["token", "create", "--kubeconfig"])
            .arg(&c.kubeconfig)
            .args(["--description", "node-api test"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        c.token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        c
    }

    fn state_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("agent-{node}"))
    }

    /// Starts (or starts again) a joined agent whose node API listens on `port` of loopback.
    fn start_agent(&mut self, node: &str, port: u16) {
        self.start_agent_with(node, port, &[]);
    }

    /// `start_agent` with more flags.
    fn start_agent_with(&mut self, node: &str, port: u16, flags: &[&str]) {
        let config = self.dir.path().join(format!("{node}.toml"));
        std::fs::write(
            &config,
            format!(
                "node-name = \"{node}\"\nserver = \"{}\"\ntoken = \"{}\"\ncontainerd-socket = \"{}\"\ncontainerd-namespace = \"ns-{node}\"\nstate-dir = \"{}\"\ncontainer-logs-to-journald = false\n",
                self.server_url,
                self.token,
                self.ctd.socket.display(),
                self.state_dir(node).display()
            ),
        )
        .unwrap();
        let log = self
            .dir
            .path()
            .join(format!("agent-{node}-{}.log", self.agents.len()));
        // (the flag: Proc sets DSA_NODE_API_LISTEN to any port, which the flag overrides)
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "agent",
            "--config",
            config.to_str().unwrap(),
            "--node-api-listen",
            &listen,
        ];
        args.extend_from_slice(flags);
        let p = Proc::spawn(&args, log);
        self.agents.retain(|(n, _)| n != node);
        self.agents.push((node.to_string(), p));
    }

    fn agent(&mut self, node: &str) -> &mut Proc {
        &mut self.agents.iter_mut().find(|(n, _)| n == node).unwrap().1
    }

    fn kubectl_with(&self, kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(common::kubectl(), &self.kubeconfig, args)
    }

    fn ok(&self, kubectl: &Path, args: &[&str]) -> String {
        let out = self.kubectl_with(kubectl, &self.kubeconfig, args);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}{}",
            kubectl.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn apply(&self, yaml: &str) {
        let f = self.dir.path().join("apply.yaml");
        std::fs::write(&f, yaml).unwrap();
        self.ok(common::kubectl(), &["apply", "-f", f.to_str().unwrap()]);
    }

    /// The pod of DaemonSet `ds` on `node` (its name) once `ready` says it is far enough.
    fn pod_on(&self, ds: &str, node: &str, ready: impl Fn(&serde_json::Value) -> bool) -> String {
        wait_for(
            &format!("a pod of {ds} on {node}"),
            Duration::from_secs(60),
            || {
                let out = self.kubectl(&["get", "pods", "-l", &format!("app={ds}"), "-o", "json"]);
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                v["items"]
                    .as_array()?
                    .iter()
                    .find(|p| p["spec"]["nodeName"] == node && ready(p))
                    .and_then(|p| p["metadata"]["name"].as_str().map(str::to_string))
            },
        )
    }

    fn debug(&self) -> String {
        let mut s = format!("--- server ---\n{}\n", self.server.log_tail(30));
        for (n, p) in &self.agents {
            s.push_str(&format!("--- agent {n} ---\n{}\n", p.log_tail(30)));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.debug());
        }
    }
}

fn running(p: &serde_json::Value) -> bool {
    p["status"]["containerStatuses"]
        .as_array()
        .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c["state"]["running"].is_object()))
}

fn restarted(p: &serde_json::Value) -> bool {
    p["status"]["containerStatuses"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["restartCount"].as_i64() >= Some(1)))
}

/// A DaemonSet of `containers`, on the host's network: nothing here needs a pod network, and
/// the machine's CNI address range is shared by every test run on it.
fn ds(name: &str, containers: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      hostNetwork: true\n      terminationGracePeriodSeconds: 1\n      containers:\n{containers}"
    )
}

fn container(name: &str, script: &str) -> String {
    format!(
        "      - name: {name}\n        image: {}/busybox:v1\n        command: [\"sh\", \"-c\", {script:?}]\n",
        common::registry()
    )
}

/// Every `kubectl logs` variant the issue names, with `kubectl` (the newest or 1.27).
fn logs_variants(c: &Cluster, kubectl: &Path, pod: &str, crashed: &str) {
    let k = |args: &[&str]| c.ok(kubectl, args);
    let all = k(&["logs", pod, "-c", "main"]);
    assert!(all.starts_with("start\n"), "{all}");
    let two = k(&["logs", pod, "-c", "main", "--tail=2"]);
    assert_eq!(two.lines().count(), 2, "{two}");
    assert!(two.lines().all(|l| l.starts_with("line ")), "{two}");
    let stamped = k(&["logs", pod, "-c", "main", "--tail=1", "--timestamps"]);
    let (stamp, rest) = stamped.trim_end().split_once(' ').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok() && rest.starts_with("line "),
        "{stamped}"
    );
    assert!(k(&["logs", pod, "-c", "main", "--since=1h"]).starts_with("start\n"));
    assert_eq!(k(&["logs", pod, "-c", "main", "--limit-bytes=4"]), "star");
    // the first container by default; the other named
    assert!(k(&["logs", pod]).starts_with("start\n"));
    assert!(k(&["logs", pod, "-c", "side"]).starts_with("side start\n"));
    assert!(k(&["logs", "ds/talker", "-c", "side"]).starts_with("side start\n"));
    let prefixed = k(&[
        "logs",
        "-l",
        "app=talker",
        "-c",
        "main",
        "--prefix",
        "--tail=1",
    ]);
    assert!(
        prefixed
            .lines()
            .any(|l| l.starts_with(&format!("[pod/{pod}/main] line "))),
        "{prefixed}"
    );
    let both = k(&["logs", pod, "--all-containers"]);
    assert!(
        both.contains("\nstart\n") || both.starts_with("start\n"),
        "{both}"
    );
    assert!(both.contains("side start\n"), "{both}");
    let previous = k(&["logs", crashed, "--previous"]);
    assert!(previous.starts_with("boot "), "{previous}");
    // an unknown container is kube-apiserver's 400
    let out = c.kubectl_with(kubectl, &c.kubeconfig, &["logs", pod, "-c", "nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("container nope is not valid for pod"),
        "{out:?}"
    );

    // following: a line written after kubectl started arrives within a second of the next one
    let mut f = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["logs", "-f", pod, "-c", "main", "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(f.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let n = |l: &str| l.trim_start_matches("line ").parse::<u64>().unwrap();
    let t0 = Instant::now();
    let second = lines.next().unwrap().unwrap();
    let took = t0.elapsed();
    let third = lines.next().unwrap().unwrap();
    let _ = f.kill();
    let _ = f.wait();
    assert_eq!((n(&second), n(&third)), (n(&first) + 1, n(&first) + 2));
    // the container writes a line every 0.3 s
    assert!(
        took < Duration::from_secs(1),
        "followed line after {took:?}"
    );
}

#[test]
fn kubectl_logs_reaches_the_nodes_through_the_server() {
    common::require("ctr");
    let mut c = Cluster::start();
    c.start_agent("node-a", common::free_port());
    c.start_agent("node-b", common::free_port());
    c.apply(&ds(
        "talker",
        &format!(
            "{}{}",
            container(
                "main",
                "echo start; i=0; while true; do echo line $i; i=$((i+1)); sleep 0.3; done"
            ),
            container("side", "echo side start; exec sleep 3600")
        ),
    ));
    c.apply(&ds(
        "crasher",
        &container(
            "main",
            "echo boot $(cat /proc/sys/kernel/random/uuid); sleep 1; exit 3",
        ),
    ));
    let pod = c.pod_on("talker", "node-a", running);
    let crashed = c.pod_on("crasher", "node-a", restarted);
    for kubectl in [
        common::kubectl().to_path_buf(),
        common::kubectl_release("1.27"),
    ] {
        logs_variants(&c, &kubectl, &pod, &crashed);
    }

    // kubectl top: a container burning CPU shows up to a core (the machine is shared: at least
    // 100m, and far more than the idle talker), the node its figures
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: burner\n  labels:\n    app: burner\nspec:\n  nodeName: node-a\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n{}",
        container("main", "while :; do :; done")
    ));
    c.pod_on("burner", "node-a", running);
    for kubectl in [
        common::kubectl().to_path_buf(),
        common::kubectl_release("1.27"),
    ] {
        let millicores = |pod: &str| {
            let text = c.ok(&kubectl, &["top", "pod", pod]);
            let row = text.lines().find(|l| l.starts_with(pod))?;
            let cpu = row.split_whitespace().nth(1)?;
            cpu.strip_suffix('m')?.parse::<u64>().ok()
        };
        let burning = wait_for(
            "kubectl top pod to show the burner",
            Duration::from_secs(30),
            || millicores("burner").filter(|m| *m > 0),
        );
        let idle = millicores(&pod).unwrap();
        assert!(
            (100..=1100).contains(&burning) && burning > 5 * idle,
            "{burning}m, idle {idle}m"
        );
        let nodes = c.ok(&kubectl, &["top", "node"]);
        let row = nodes
            .lines()
            .find(|l| l.starts_with("node-a "))
            .unwrap_or_else(|| panic!("{nodes}"));
        let f: Vec<&str> = row.split_whitespace().collect();
        assert!(f[1].ends_with('m') && f[3].ends_with("Mi"), "{row}");
    }
    c.ok(
        common::kubectl(),
        &["delete", "pod", "burner", "--wait=false"],
    );
    let summary = c.ok(
        common::kubectl(),
        &["get", "--raw", "/api/v1/nodes/node-a/proxy/stats/summary"],
    );
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert!(
        summary["node"]["memory"]["workingSetBytes"].as_u64() > Some(0),
        "{summary}"
    );
    assert!(
        summary["pods"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["podRef"]["name"] == pod.as_str()
                && p["containers"].as_array().is_some_and(|c| c.len() == 2)),
        "{summary}"
    );

    // nodes/proxy reaches the node API as it is (admin only)
    let health = c.ok(
        common::kubectl(),
        &["get", "--raw", "/api/v1/nodes/node-a/proxy/healthz"],
    );
    assert_eq!(health, "ok");
    let own = c.ok(
        common::kubectl(),
        &["get", "--raw", "/api/v1/nodes/node-a/proxy/metrics"],
    );
    assert!(own.contains("\nprocess_resident_memory_bytes "), "{own}");

    // a node's own credential: no pods/log, not of its own pods nor of another node's
    let node_b = c.state_dir("node-b").join("pki/node.kubeconfig");
    let other = c.pod_on("talker", "node-a", running);
    for pod in [&other, &c.pod_on("talker", "node-b", running)] {
        let out = c.kubectl_with(common::kubectl(), &node_b, &["logs", pod, "-c", "main"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("Forbidden"), "{err}");
        let path = format!("/api/v1/namespaces/default/pods/{pod}/log?container=main");
        let out = c.kubectl_with(common::kubectl(), &node_b, &["get", "--raw", &path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("Forbidden"), "{err}");
        assert!(err.contains("pods/log"), "{err}");
    }
    let out = c.kubectl_with(
        common::kubectl(),
        &node_b,
        &["get", "--raw", "/api/v1/nodes/node-a/proxy/healthz"],
    );
    assert!(!out.status.success());

    // the node API itself: anonymous is 401, a node's certificate 403
    let port = {
        let out = c.ok(common::kubectl(), &["get", "node", "node-a", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["status"]["addresses"][0]["type"], "InternalIP");
        v["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_u64()
            .unwrap()
    };
    let pki = c.state_dir("node-b").join("pki");
    let curl = |cert: bool| {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(pki.join("ca.crt"))
            .arg(format!("https://127.0.0.1:{port}/healthz"));
        if cert {
            cmd.arg("--cert")
                .arg(pki.join("node.crt"))
                .arg("--key")
                .arg(pki.join("node.key"));
        }
        String::from_utf8(cmd.output().unwrap().stdout).unwrap()
    };
    assert_eq!(curl(false), "401", "anonymous");
    assert_eq!(curl(true), "403", "another node's certificate");

    // the agent down: a clear 503 from the server naming the node; back up, logs again
    c.agent("node-a").kill();
    let out = c.kubectl(&["logs", &pod, "-c", "main", "--tail=1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains("node API of node \"node-a\" is not reachable"),
        "{err}"
    );
    let raw = c.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/pods/{pod}/log?container=main"),
    ]);
    assert!(
        String::from_utf8_lossy(&raw.stderr).contains("ServiceUnavailable")
            || String::from_utf8_lossy(&raw.stderr).contains("503"),
        "{raw:?}"
    );
    c.start_agent("node-a", port as u16);
    wait_for(
        "logs after the agent is back",
        Duration::from_secs(30),
        || {
            let out = c.kubectl(&["logs", &pod, "-c", "main", "--tail=1"]);
            (out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("line "))
                .then_some(())
        },
    );
}

/// Runs `argv` under a new pseudo-terminal of 33 rows and 111 columns (Python's pty): types
/// `typed` once `expect` shows in the output; the output and the exit code (a client still
/// running after a minute is killed).
fn under_pty(argv: &[&str], expect: &str, typed: &str) -> (String, i32) {
    const PTY: &str = r#"
import fcntl, os, pty, signal, struct, sys, termios
expect, typed, argv = sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    os.execvp(argv[0], argv)
# a client that never ends is killed: its output so far tells why
signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
signal.alarm(60)
out, sent = b"", False
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
    if not sent and expect in out:
        os.write(fd, typed)
        sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = Command::new("python3")
        .args(["-c", PTY, expect, typed])
        .args(argv)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        out.status.code().unwrap_or(-1),
    )
}

/// `kubectl exec` with `kubectl` (WebSocket from 1.30 on, SPDY before): output and exit code,
/// stdin, a missing command, a terminal of the client's size that takes typed input.
fn exec_variants(c: &Cluster, kubectl: &Path, pod: &str) {
    let kube = |args: &[&str]| {
        let mut cmd = Command::new(kubectl);
        cmd.arg("--kubeconfig").arg(&c.kubeconfig).args(args);
        cmd
    };
    let out = kube(&[
        "exec",
        pod,
        "--",
        "sh",
        "-c",
        "echo hi; echo oops >&2; exit 3",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("oops\n"), "{err}");
    assert!(err.contains("command terminated with exit code 3"), "{err}");
    // the container's environment and working directory
    let out = c.ok(
        kubectl,
        &["exec", pod, "--", "sh", "-c", "echo $GREETING; pwd"],
    );
    assert_eq!(out, "hello\n/srv\n");
    // stdin to its end
    let mut child = kube(&["exec", "-i", pod, "--", "sh", "-c", "wc -l; cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"one\ntwo\nthree\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    // a command that is not there: 127, the reason shown
    let out = kube(&["exec", pod, "--", "no-such-command"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{out:?}"
    );
    // a terminal: the client's size arrives as a resize, typed input comes back
    let kubeconfig = c.kubeconfig.to_str().unwrap();
    let argv = [
        kubectl.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig,
        "exec",
        "-it",
        pod,
        "--",
        "sh",
        "-c",
        "stty size; read x; echo got $x; exit 4",
    ];
    let (out, code) = under_pty(&argv, "33 111", "abc\n");
    assert!(out.contains("33 111"), "{out}");
    assert!(out.contains("got abc"), "{out}");
    assert_eq!(code, 4, "{out}");
}

/// `kubectl port-forward` to the pod's web server: curl through it gets its page. `tunneled`:
/// kubectl speaks SPDY inside a WebSocket (1.31+) rather than falling back to plain SPDY.
fn port_forward(c: &Cluster, kubectl: &Path, (pod, port): &(String, u16), tunneled: bool) {
    let local = common::free_port();
    let mut pf = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        // (-v=4: client-go's tunneling dialer says when its WebSocket was accepted)
        .args(["-v=4"])
        .args([
            "port-forward",
            &format!("pod/{pod}"),
            &format!("{local}:{port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // ready once it says where it listens
    let mut lines = BufReader::new(pf.stdout.take().unwrap()).lines();
    let ready = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    let got = |n: u32| {
        Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .arg(format!("http://127.0.0.1:{local}/?n={n}"))
            .output()
            .unwrap()
    };
    let (first, second) = (got(1), got(2));
    let _ = pf.kill();
    let out = pf.wait_with_output().unwrap();
    assert!(
        ready.starts_with("Forwarding from 127.0.0.1"),
        "{ready} {out:?}"
    );
    for got in [first, second] {
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            "hello from the pod\n",
            "{} {got:?} {out:?}",
            kubectl.display()
        );
    }
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        log.contains("negotiated protocol: portforward.k8s.io"),
        tunneled,
        "{} {log}",
        kubectl.display()
    );
}

/// `kubectl cp` (exec of tar) into the pod and back.
fn copy_both_ways(c: &Cluster, kubectl: &Path, pod: &str) {
    let local = c.dir.path().join("to-pod.txt");
    let content = format!("copied by {}\n", kubectl.display());
    std::fs::write(&local, &content).unwrap();
    c.ok(
        kubectl,
        &[
            "cp",
            local.to_str().unwrap(),
            &format!("{pod}:/tmp/copied.txt"),
        ],
    );
    assert_eq!(
        c.ok(kubectl, &["exec", pod, "--", "cat", "/tmp/copied.txt"]),
        content
    );
    let back = c.dir.path().join("from-pod.txt");
    let _ = std::fs::remove_file(&back);
    c.ok(
        kubectl,
        &[
            "cp",
            &format!("{pod}:/tmp/copied.txt"),
            back.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read_to_string(&back).unwrap(), content);
}

#[test]
fn kubectl_exec_and_attach_reach_the_containers() {
    common::require("ctr");
    let mut c = Cluster::start();
    c.start_agent("node-a", common::free_port());
    let shell = format!(
        "{}        env: [{{name: GREETING, value: hello}}]\n        workingDir: /srv\n",
        container(
            "main",
            // (kubectl cp runs tar, which the test image links only here)
            "ln -sf /bin/busybox /bin/tar; echo start; i=0; while true; do echo line $i; i=$((i+1)); sleep 0.3; done"
        )
    );
    c.apply(&ds("shell", &shell));
    let pod = c.pod_on("shell", "node-a", running);
    // a web server on a free port of the node (hostNetwork)
    let web_port = common::free_port();
    c.apply(&ds(
        "web",
        &container(
            "main",
            &format!("mkdir -p /www && echo hello from the pod > /www/index.html && exec httpd -f -p 127.0.0.1:{web_port} -h /www"),
        ),
    ));
    let web = (c.pod_on("web", "node-a", running), web_port);
    for (kubectl, tunneled) in [
        (common::kubectl_release("1.33"), true),
        (common::kubectl_release("1.27"), false),
    ] {
        exec_variants(&c, &kubectl, &pod);
        port_forward(&c, &kubectl, &web, tunneled);
        copy_both_ways(&c, &kubectl, &pod);
    }

    // the Python client's stream (v4.channel.k8s.io)
    let script = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import stream
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
resp = stream(v1.connect_get_namespaced_pod_exec, sys.argv[2], "default",
              command=["sh", "-c", "echo py $GREETING; exit 5"],
              stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
resp.run_forever(timeout=30)
print(resp.read_stdout(), end="")
print("exit", resp.returncode)
"#;
    let out = Command::new(common::python_client())
        .args(["-c", script])
        .arg(&c.kubeconfig)
        .arg(&pod)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "py hello\nexit 5\n");

    // the Python client's portforward (the WebSocket channel protocol)
    let script = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import portforward
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
port = int(sys.argv[3])
pf = portforward(v1.connect_get_namespaced_pod_portforward, sys.argv[2], "default", ports=str(port))
s = pf.socket(port)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
got = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    got += chunk
s.close()
print(got.split(b"\r\n\r\n", 1)[-1].decode(), end="")
print("error", pf.error(port))
"#;
    let out = Command::new(common::python_client())
        .args(["-c", script])
        .arg(&c.kubeconfig)
        .arg(&web.0)
        .arg(web.1.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the pod\nerror None\n"
    );

    // attach: the container's output from now on
    let mut attached = Command::new(common::kubectl_release("1.33"))
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["attach", &pod, "-c", "main"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(attached.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    let _ = attached.kill();
    let _ = attached.wait();
    let n = |l: &str| l.trim_start_matches("line ").parse::<u64>().unwrap();
    assert_eq!(n(&second), n(&first) + 1, "{first} {second}");

    // the writable layer's usage in the node's summary (the snapshotter's, of the container)
    c.ok(
        common::kubectl(),
        &[
            "exec",
            &pod,
            "--",
            "sh",
            "-c",
            "head -c 3000000 /dev/zero > /filler",
        ],
    );
    let summary = c.ok(
        common::kubectl(),
        &["get", "--raw", "/api/v1/nodes/node-a/proxy/stats/summary"],
    );
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let rootfs = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == pod.as_str())
        .map(|p| p["containers"][0]["rootfs"].clone())
        .unwrap();
    assert!(rootfs["usedBytes"].as_u64() >= Some(3_000_000), "{rootfs}");
    assert!(rootfs["inodesUsed"].as_u64() >= Some(1), "{rootfs}");

    // a session that passes no data ends after the agent's idle timeout (kubectl's pings
    // keep nothing open)
    c.start_agent_with(
        "node-b",
        common::free_port(),
        &["--streaming-connection-idle-timeout", "3s"],
    );
    let idle_pod = c.pod_on("shell", "node-b", running);
    let started = Instant::now();
    let mut idle = Command::new(common::kubectl_release("1.33"))
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["exec", "-i", &idle_pod, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let held_open = idle.stdin.take();
    let ended = common::wait_for("the idle exec to end", Duration::from_secs(60), || {
        idle.try_wait().unwrap().map(|_| Instant::now())
    });
    drop(held_open);
    assert!(
        ended - started >= Duration::from_secs(3),
        "ended after {:?}",
        ended - started
    );
    assert!(
        c.agent("node-b")
            .log()
            .contains("streaming connection idle timeout"),
        "{}",
        c.debug()
    );

    // a viewer may read the pod and its log, not exec into it
    let out = Command::new(env!("CARGO_BIN_EXE_daemonset-agent"))
        .args(["token", "create", "--role", "view", "--kubeconfig"])
        .arg(&c.kubeconfig)
        .args(["--description", "viewer"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let view = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let viewer = c.dir.path().join("view.kubeconfig");
    let admin = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let ca = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .unwrap();
    std::fs::write(
        &viewer,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: v\n  user:\n    token: {view}\ncontexts:\n- name: c\n  context: {{cluster: c, user: v}}\ncurrent-context: c\n",
            c.server_url
        ),
    )
    .unwrap();
    let out = c.kubectl_with(common::kubectl(), &viewer, &["logs", &pod, "--tail=1"]);
    assert!(out.status.success(), "{out:?}");
    let out = c.kubectl_with(common::kubectl(), &viewer, &["exec", &pod, "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
    assert!(err.contains("pods/exec"), "{err}");

    // the agent down: a clear error naming the node
    c.agent("node-a").kill();
    let out = c.kubectl(&["exec", &pod, "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(err.contains("node-a"), "{err}");
}

/// A container of busybox running `cmd` with the stdin fields `extra` (YAML lines).
fn stdin_container(name: &str, cmd: &str, extra: &str) -> String {
    format!(
        "      - name: {name}\n        image: {}/busybox:v1\n        command: [{cmd}]\n{extra}",
        common::registry()
    )
}

/// `kubectl attach` (with `kubectl`, `flags`) to `container` of `pod`, its stdin and stdout
/// piped: the process, its stdin, and its output lines as they come.
fn attach(
    c: &Cluster,
    kubectl: &Path,
    pod: &str,
    container: &str,
    flags: &[&str],
) -> (
    std::process::Child,
    std::process::ChildStdin,
    std::sync::mpsc::Receiver<String>,
) {
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .arg("attach")
        .args(flags)
        .args([pod, "-c", container])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    (child, stdin, rx)
}

/// Waits for a line of `rx` equal to `want`.
fn see_line(rx: &std::sync::mpsc::Receiver<String>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = vec![];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.trim_end_matches('\r') == want => return,
            Ok(l) => seen.push(l),
            Err(e) => panic!("no line {want:?} in the attach output ({e}): {seen:?}"),
        }
    }
}

/// Writes `line` to `input` again (each second) until a line of `output` ends with `want`:
/// an attach follows the output from when its session starts, which its client does not tell.
fn write_until_seen(
    input: &mut std::process::ChildStdin,
    output: &std::sync::mpsc::Receiver<String>,
    line: &str,
    want: &str,
    within: Duration,
) {
    use std::io::Write as _;
    wait_for(&format!("{want:?} in the attach output"), within, || {
        writeln!(input, "{line}").ok()?;
        output
            .recv_timeout(Duration::from_secs(1))
            .ok()
            .filter(|l| l.trim_end_matches('\r').ends_with(want))
    });
}

fn restarts_of(c: &Cluster, pod: &str, container: &str) -> i64 {
    let out = c.ok(common::kubectl(), &["get", "pod", pod, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["status"]["containerStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == container)
        .and_then(|s| s["restartCount"].as_i64())
        .unwrap()
}

/// `kubectl attach -i` and `-it` (WebSocket with 1.33, SPDY with 1.27) to containers with
/// `stdin`: the input reaches the process (and its log), two attaches at once, an agent killed
/// and started again; `stdinOnce` ends the input with the first attach; a `tty` container's
/// terminal takes the client's size.
#[test]
fn kubectl_attach_sends_input_to_the_containers() {
    common::require("ctr");
    let mut c = Cluster::start();
    c.start_agent("node-a", common::free_port());
    let containers = [
        stdin_container("cat", "cat", "        stdin: true\n"),
        stdin_container(
            "once",
            "cat",
            "        stdin: true\n        stdinOnce: true\n",
        ),
        stdin_container("term", "sh", "        stdin: true\n        tty: true\n"),
    ]
    .concat();
    c.apply(&ds("talk", &containers));
    let pod = c.pod_on("talk", "node-a", running);
    // a long past in cat's log (written to its stdout by an exec): an attach reads past it
    // before it follows, and must not take its own first echo for part of it
    let past = [
        "exec",
        &pod,
        "-c",
        "cat",
        "--",
        "sh",
        "-c",
        "seq 100000 >/proc/1/fd/1",
    ];
    c.ok(common::kubectl(), &past);
    wait_for("the past in the log", Duration::from_secs(60), || {
        let last = c.ok(common::kubectl(), &["logs", &pod, "-c", "cat", "--tail=1"]);
        (last.trim() == "100000").then_some(())
    });

    for (i, kubectl) in [
        common::kubectl_release("1.33"),
        common::kubectl_release("1.27"),
    ]
    .iter()
    .enumerate()
    {
        let (mut a, mut a_in, a_out) = attach(&c, kubectl, &pod, "cat", &["-i"]);
        let (mut b, _b_in, b_out) = attach(&c, kubectl, &pod, "cat", &["-i"]);
        use std::io::Write as _;
        // the first attach's input, written once before its session even starts: its echo
        // (cat's output, from the log) is the attach's own to see, never taken for the past
        // (kubectl 1.27 sends it with its last stream, as the agent begins to follow the log)
        writeln!(a_in, "hello {i}").unwrap();
        see_line(&a_out, &format!("hello {i}"));
        // and seen by the second attach too (written again until it follows the log)
        let again = format!("again {i}");
        write_until_seen(&mut a_in, &b_out, &again, &again, Duration::from_secs(30));
        see_line(&a_out, &format!("again {i}"));
        drop(a_in);
        let _ = a.kill();
        let _ = a.wait();
        let _ = b.kill();
        let _ = b.wait();
        let logs = c.ok(common::kubectl(), &["logs", &pod, "-c", "cat"]);
        assert!(logs.contains(&format!("hello {i}\n")), "{logs}");
    }
    assert_eq!(restarts_of(&c, &pod, "cat"), 0, "attaches ended cat");

    // the agent killed and started again: the container's stdin is still there
    let port = common::free_port();
    c.agent("node-a").kill();
    c.start_agent("node-a", port);
    let (mut a, mut a_in, a_out) = attach(&c, common::kubectl(), &pod, "cat", &["-i"]);
    let line = "after restart";
    write_until_seen(&mut a_in, &a_out, line, line, Duration::from_secs(60));
    drop(a_in);
    let _ = a.kill();
    let _ = a.wait();
    assert_eq!(restarts_of(&c, &pod, "cat"), 0);

    // stdinOnce: the end of the first attach's input is cat's
    let (mut a, mut a_in, a_out) = attach(&c, common::kubectl(), &pod, "once", &["-i"]);
    write_until_seen(&mut a_in, &a_out, "once", "once", Duration::from_secs(30));
    drop(a_in);
    wait_for("cat of stdinOnce to end", Duration::from_secs(60), || {
        (restarts_of(&c, &pod, "once") >= 1).then_some(())
    });
    let _ = a.kill();
    let _ = a.wait();

    // tty: a shell on a terminal; without -t first
    let (mut a, mut a_in, a_out) = attach(&c, common::kubectl(), &pod, "term", &["-i"]);
    let typed = "echo mark$((6*7))";
    write_until_seen(&mut a_in, &a_out, typed, "mark42", Duration::from_secs(30));
    let _ = a.kill();
    let _ = a.wait();
    // the Python client's attach: stdin, and a resize of the terminal
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python_client.py");
    let py = Command::new(common::python_client())
        .arg(script)
        .arg("attach")
        .arg(&c.kubeconfig)
        .arg(&pod)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = py.id().to_string();
    // (a client that hangs is killed: its output tells where)
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(90));
        let _ = Command::new("kill").args(["-9", &pid]).status();
    });
    let out = py.wait_with_output().unwrap();
    drop(watchdog);
    assert!(out.status.success(), "{out:?}");
    let logs = c.ok(common::kubectl(), &["logs", &pod, "-c", "term"]);
    assert!(logs.contains("33 111"), "{logs}");
}
