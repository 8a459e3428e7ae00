//! A fleet across real hosts: the server and two agents each in a network namespace of the test's
//! own (veths to a bridge in a hub namespace, addresses of a private range, no loopback between
//! them), over verified TLS, the agents joined with a token. Containers run through one private
//! containerd on the host (its unix socket is reachable from every namespace); the image is
//! pulled into each node's containerd namespace beforehand, since the loopback registry is not
//! reachable from the namespaces.
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::netns::Hosts;
use common::{wait_for, Containerd};

const BIN: &str = env!("CARGO_BIN_EXE_daemonset-agent");
const SRV: usize = 0;
const A: usize = 1;
const B: usize = 2;
const CLI: usize = 3;
const OTHER: usize = 4;

/// A daemon of the test, killed and reaped when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(mut cmd: Command, log: PathBuf) -> Daemon {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env("DSA_LOG", "debug")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn daemonset-agent");
        Daemon { child, log }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(mut cmd: Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    eprintln!(
        "$ {:?}\n{}{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// curl inside host `i`: (status code, body).
fn curl(hosts: &Hosts, i: usize, args: &[&str]) -> (u16, String) {
    let mut c = hosts.command(i, "curl");
    c.args(["-s", "-m", "10", "-w", "\n%{http_code}"])
        .args(args);
    let out = run(c);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn kubectl(hosts: &Hosts, kubectl: &Path, kc: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = hosts.command(CLI, kubectl);
    c.arg("--kubeconfig").arg(kc).args(args);
    let Some(input) = stdin else { return run(c) };
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
        "$ kubectl {args:?}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn server(hosts: &Hosts, i: usize, data: &Path, dir: &Path) -> Daemon {
    let (_, addr) = hosts.host(i);
    let mut c = hosts.command(i, BIN);
    c.args([
        "server",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &format!("{addr}:6443"),
    ]);
    let d = Daemon::spawn(c, dir.join(format!("server-{i}.log")));
    let kc = data.join("admin.kubeconfig");
    wait_for(
        "the server to answer over TLS",
        Duration::from_secs(30),
        || {
            (kc.exists()
                && kubectl(
                    hosts,
                    common::kubectl(),
                    &kc,
                    &["get", "--raw", "/readyz"],
                    None,
                )
                .status
                .success())
            .then_some(())
        },
    );
    d
}

fn agent_config(
    dir: &Path,
    node: &str,
    server: &str,
    token: &str,
    ctd: &Containerd,
    ns: &str,
) -> PathBuf {
    let path = dir.join(format!("{node}.toml"));
    std::fs::write(
        &path,
        format!(
            "node-name = \"{node}\"\nserver = \"{server}\"\ntoken = \"{token}\"\ncontainerd-socket = \"{}\"\ncontainerd-namespace = \"{ns}\"\nstate-dir = \"{}\"\ncontainer-logs-to-journald = false\n",
            ctd.socket.display(),
            dir.join(format!("agent-{node}")).display()
        ),
    )
    .unwrap();
    path
}

fn running_tasks(ctd: &Containerd, ns: &str) -> usize {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(&ctd.socket)
        .args(["-n", ns, "tasks", "ls"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("RUNNING"))
        .count()
}

#[test]
fn a_fleet_joins_over_verified_tls_and_each_node_keeps_to_its_own() {
    for bin in ["ip", "curl", "ctr"] {
        common::require(bin);
    }
    let reg = common::registry();
    let tag = format!("f{}", std::process::id() % 10_000);
    // dropped last: the guard below stops what runs in them first
    let hosts = Hosts::new(&tag, &["srv", "a", "b", "cli", "oth"]);
    let ctd = Containerd::start();
    let dir = tempfile::Builder::new()
        .prefix("dsa-fleet-")
        .tempdir_in("/tmp")
        .unwrap();
    let _guard = common::Guard::new().containerd(&ctd).dir(dir.path());
    let d = dir.path();
    let (ns_a, ns_b) = (format!("fleet{tag}a"), format!("fleet{tag}b"));
    let image = format!("{reg}/busybox:v1");
    for ns in [&ns_a, &ns_b] {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&ctd.socket).args([
            "-n",
            ns,
            "images",
            "pull",
            "--plain-http",
            &image,
        ]);
        assert!(run(c).status.success(), "pre-pull {image} into {ns}");
    }

    let data = d.join("server");
    let _srv = server(&hosts, SRV, &data, d);
    let kc = data.join("admin.kubeconfig");
    let url = format!("https://{}:6443", hosts.host(SRV).1);
    let mut c = hosts.command(CLI, BIN);
    c.args([
        "token",
        "create",
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--description",
        "fleet",
    ]);
    let out = run(c);
    assert!(out.status.success());
    let join = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(join.starts_with("sha256:") && join.contains("::"), "{join}");

    // an agent pointed at a server with another CA refuses to join, naming both CAs
    let other_data = d.join("other");
    let other = server(&hosts, OTHER, &other_data, d);
    let other_ca = daemonset_agent::pki::CertInfo::parse_pem(
        &std::fs::read_to_string(other_data.join("tls/ca.crt")).unwrap(),
    )
    .unwrap()
    .spki_hash
    .to_string();
    let other_url = format!("https://{}:6443", hosts.host(OTHER).1);
    let cfg = agent_config(d, "stray", &other_url, &join, &ctd, &ns_b);
    let mut c = hosts.command(B, BIN);
    c.args(["agent", "--config", cfg.to_str().unwrap()]);
    let out = run(c);
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "joined a server of another CA");
    let pin = join.split("::").next().unwrap();
    assert!(
        err.contains("refusing to join") && err.contains(pin) && err.contains(&other_ca),
        "{err}"
    );
    assert!(!d.join("agent-stray/pki/node.crt").exists());
    drop(other);

    // two agents join with the token and run a DaemonSet
    let mut agents = vec![];
    for (i, node, ns) in [(A, "fleet-a", &ns_a), (B, "fleet-b", &ns_b)] {
        let cfg = agent_config(d, node, &url, &join, &ctd, ns);
        let mut c = hosts.command(i, BIN);
        c.args(["agent", "--config", cfg.to_str().unwrap()]);
        agents.push(Daemon::spawn(c, d.join(format!("agent-{node}.log"))));
    }
    let newest = common::kubectl().to_path_buf();
    wait_for("both nodes registered", Duration::from_secs(60), || {
        let out = kubectl(&hosts, &newest, &kc, &["get", "nodes", "-o", "name"], None);
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        for a in &agents {
            assert!(a.child.id() > 0);
        }
        (s.contains("node/fleet-a") && s.contains("node/fleet-b")).then_some(())
    });
    let ds = format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: fleet\nspec:\n  selector:\n    matchLabels: {{app: fleet}}\n  template:\n    metadata:\n      labels: {{app: fleet}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {image}\n        command: [\"sleep\", \"100000\"]\n"
    );
    assert!(
        kubectl(&hosts, &newest, &kc, &["apply", "-f", "-"], Some(&ds))
            .status
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !(running_tasks(&ctd, &ns_a) == 1 && running_tasks(&ctd, &ns_b) == 1) {
        if std::time::Instant::now() > deadline {
            for a in &agents {
                eprintln!("--- {}\n{}", a.log.display(), a.log());
            }
            panic!("timed out waiting for the DaemonSet running on both nodes");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for (a, node) in agents.iter().zip(["fleet-a", "fleet-b"]) {
        assert!(
            a.log().contains("joined"),
            "{node} did not join with its own certificate:\n{}",
            a.log()
        );
    }

    // node fleet-a's own credential: 403 off what is not its own, nothing changed
    let pki = d.join("agent-fleet-a/pki");
    let p = |f: &str| pki.join(f).to_str().unwrap().to_string();
    let node_a: Vec<String> = vec![
        "--cacert".into(),
        p("ca.crt"),
        "--cert".into(),
        p("node.crt"),
        "--key".into(),
        p("node.key"),
    ];
    let as_a = |extra: &[&str]| {
        let mut args: Vec<&str> = node_a.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        curl(&hosts, A, &args)
    };
    let json = "Content-Type: application/json";
    let (code, body) = as_a(&[
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/merge-patch+json",
        "-d",
        r#"{"metadata":{"labels":{"owned":"by-a"}}}"#,
        &format!("{url}/api/v1/nodes/fleet-b"),
    ]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains(r#"nodes \"fleet-b\" is forbidden: User \"system:node:fleet-a\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope"#), "{body}");
    let (code, body) = as_a(&[
        "-X",
        "POST",
        "-H",
        json,
        "-d",
        r#"{"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":"evil"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"x"}]}}}}"#,
        &format!("{url}/apis/apps/v1/namespaces/default/daemonsets"),
    ]);
    assert_eq!(code, 403, "{body}");
    let (code, body) = as_a(&[
        "-X",
        "DELETE",
        &format!("{url}/apis/apps/v1/namespaces/default/daemonsets/fleet"),
    ]);
    assert_eq!(code, 403, "{body}");
    assert!(kubectl(
        &hosts,
        &newest,
        &kc,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Secret\nmetadata:\n  name: b-only\nstringData:\n  k: v\n")
    )
    .status
    .success());
    let (code, body) = as_a(&[&format!("{url}/api/v1/namespaces/default/secrets/b-only")]);
    assert_eq!(code, 403, "{body}");
    let out = kubectl(
        &hosts,
        &newest,
        &kc,
        &[
            "get",
            "node",
            "fleet-b",
            "-o",
            "jsonpath={.metadata.labels.owned}",
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "fleet-b was changed"
    );
    let out = kubectl(
        &hosts,
        &newest,
        &kc,
        &["get", "daemonsets", "-o", "name"],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "daemonset.apps/fleet"
    );

    // no token, a wrong, an expired and a revoked token: 401
    let ca = data.join("tls/ca.crt");
    let ca = ca.to_str().unwrap();
    let nodes = format!("{url}/api/v1/nodes");
    assert_eq!(curl(&hosts, CLI, &["--cacert", ca, &nodes]).0, 401);
    assert_eq!(
        curl(
            &hosts,
            CLI,
            &[
                "--cacert",
                ca,
                "-H",
                "Authorization: Bearer abcdef.0123456789abcdef",
                &nodes
            ]
        )
        .0,
        401
    );
    let token = |args: &[&str]| {
        let mut c = hosts.command(CLI, BIN);
        c.args([
            "token",
            "create",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--role",
            "view",
        ])
        .args(args);
        let out = run(c);
        assert!(out.status.success());
        format!(
            "Authorization: Bearer {}",
            String::from_utf8_lossy(&out.stdout).trim()
        )
    };
    let short = token(&["--ttl", "2s"]);
    wait_for("the 2 s token to expire", Duration::from_secs(30), || {
        (curl(&hosts, CLI, &["--cacert", ca, "-H", &short, &nodes]).0 == 401).then_some(())
    });
    let revoked = token(&[]);
    assert_eq!(
        curl(&hosts, CLI, &["--cacert", ca, "-H", &revoked, &nodes]).0,
        200
    );
    let id = revoked
        .rsplit(' ')
        .next()
        .unwrap()
        .split('.')
        .next()
        .unwrap();
    let mut c = hosts.command(CLI, BIN);
    c.args(["token", "delete", "--kubeconfig", kc.to_str().unwrap(), id]);
    assert!(run(c).status.success());
    assert_eq!(
        curl(&hosts, CLI, &["--cacert", ca, "-H", &revoked, &nodes]).0,
        401
    );
    // plain HTTP to the TLS port gets nothing of the API
    let (code, body) = curl(
        &hosts,
        CLI,
        &[&format!("http://{}:6443/api/v1/nodes", hosts.host(SRV).1)],
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        !body.contains("fleet-a") && !body.contains("NodeList"),
        "{body}"
    );

    // kubectl 1.27 and the newest, and the official Python client, verifying the server's certificate
    for k in [common::kubectl_release("1.27"), newest.clone()] {
        let out = kubectl(&hosts, &k, &kc, &["get", "nodes", "-o", "name"], None);
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            s.contains("node/fleet-a") && s.contains("node/fleet-b"),
            "{}: {s}",
            k.display()
        );
    }
    let mut c = hosts.command(CLI, common::python_client());
    c.args([
        "-c",
        "import sys; from kubernetes import client, config; config.load_kube_config(config_file=sys.argv[1]); \
         c = client.Configuration.get_default_copy(); assert c.verify_ssl, 'verification off'; \
         print(' '.join(sorted(n.metadata.name for n in client.CoreV1Api().list_node().items)))",
        kc.to_str().unwrap(),
    ]);
    let out = run(c);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "fleet-a fleet-b"
    );
    drop(agents);
}
