//! The authoring tools kubectl lacks, against the real server binary (TLS, the admin
//! kubeconfig) and the real kubectl (1.27 and the newest on the machine): `create daemonset`
//! with and without dry runs, its output applied; `convert` of kubectl's own Deployment output,
//! the result applied and validated by the server, its notes on stderr; `why` on a matching
//! node, a nodeSelector mismatch, an untolerated NoSchedule taint and an affinity expression,
//! agreeing with the pods the server's DaemonSet controller creates.
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::proc::Proc;
use common::wait_for;
use serde_json::{json, Value};

/// The server binary on a loopback port of its own, with its data directory.
struct Server {
    _proc: Proc,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("server");
        let listen = format!("127.0.0.1:{}", common::free_port());
        let proc = Proc::spawn(
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
        let s = Server {
            _proc: proc,
            kubeconfig,
            _dir: dir,
        };
        wait_for("the server to answer", Duration::from_secs(30), || {
            (s.kubeconfig.exists()
                && s.kubectl(common::kubectl(), &["get", "--raw", "/readyz"], None)
                    .status
                    .success())
            .then_some(())
        });
        s
    }

    fn kubectl(&self, kubectl: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        run(cmd, stdin)
    }

    fn kubectl_ok(&self, kubectl: &Path, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(kubectl, args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn get_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(common::kubectl(), &all, None)).unwrap()
    }

    /// `daemonset-agent ARGS` with `--kubeconfig` of this server where the command takes one.
    fn dsa(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_daemonset-agent"));
        cmd.args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env_remove("KUBECONFIG");
        run(cmd, stdin)
    }
}

/// Runs `cmd`, feeding `stdin`; prints what it said (for a failing test's log).
fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "$ {cmd:?}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn dsa_plain(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_daemonset-agent"));
    cmd.args(args);
    run(cmd, stdin)
}

#[test]
fn create_daemonset_prints_dry_runs_and_creates_through_verified_tls() {
    let srv = Server::start();
    let k127 = common::kubectl_release("1.27");
    let newest = common::kubectl();

    // --dry-run=client -o yaml, applied by each kubectl
    for (name, kubectl) in [("mon-127", k127.as_path()), ("mon-new", newest)] {
        let out = srv.dsa(
            &[
                "create",
                "daemonset",
                name,
                "--image=127.0.0.1:5000/team/node_exporter:v1.5",
                "--node-selector",
                "zone=a",
                "--node-selector=node-role.kubernetes.io/worker=true",
                "--port=9100",
                "--dry-run=client",
                "-o",
                "yaml",
            ],
            None,
        );
        assert!(out.status.success());
        let yaml = stdout(&out);
        let applied = srv.kubectl_ok(kubectl, &["apply", "-f", "-"], Some(&yaml));
        assert_eq!(applied.trim(), format!("daemonset.apps/{name} created"));
        let ds = srv.get_json(&["daemonset", name]);
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(
            pod["nodeSelector"],
            json!({"zone": "a", "node-role.kubernetes.io/worker": "true"})
        );
        assert_eq!(pod["containers"][0]["name"], "node-exporter");
        assert_eq!(pod["containers"][0]["ports"][0]["containerPort"], 9100);
        assert_eq!(ds["spec"]["selector"]["matchLabels"], json!({"app": name}));
    }

    // dry runs print what kubectl prints and store nothing
    let out = srv.dsa(
        &[
            "create",
            "daemonset",
            "dry",
            "--image=busybox",
            "--dry-run=client",
        ],
        None,
    );
    assert!(out.status.success());
    assert_eq!(stdout(&out), "daemonset.apps/dry created (dry run)\n");
    let out = srv.dsa(
        &[
            "create",
            "daemonset",
            "dry",
            "--image=busybox",
            "--dry-run=server",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "daemonset.apps/dry created (server dry run)\n"
    );
    let out = srv.dsa(
        &[
            "create",
            "daemonset",
            "dry",
            "--image=busybox",
            "--dry-run=server",
            "-o",
            "json",
        ],
        None,
    );
    let defaulted: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        defaulted["spec"]["updateStrategy"]["type"], "RollingUpdate",
        "the server defaulted the dry-run object"
    );
    assert!(!srv
        .kubectl(newest, &["get", "daemonset", "dry"], None)
        .status
        .success());

    // created through the API, the kubeconfig found through $KUBECONFIG as kubectl finds it
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_daemonset-agent"));
    cmd.args([
        "create",
        "daemonset",
        "web",
        "--image=busybox",
        "--",
        "sleep",
        "3600",
    ])
    .env("KUBECONFIG", &srv.kubeconfig);
    let out = run(cmd, None);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "daemonset.apps/web created\n");
    let ds = srv.get_json(&["daemonset", "web"]);
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["sleep", "3600"])
    );
    // a second create is refused, as kubectl's is
    let again = srv.dsa(&["create", "daemonset", "web", "--image=busybox"], None);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    // TLS is verified against the kubeconfig's CA: another CA is refused before anything is sent
    let mut kc: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&srv.kubeconfig).unwrap()).unwrap();
    let other: Value = serde_yaml::from_str(
        &std::fs::read_to_string(common::repo_root().join("fuzz/corpus/kubeconfig/tls.kubeconfig"))
            .unwrap(),
    )
    .unwrap();
    kc["clusters"][0]["cluster"]["certificate-authority-data"] =
        other["clusters"][0]["cluster"]["certificate-authority-data"].clone();
    let wrong = srv._dir.path().join("wrong-ca.kubeconfig");
    std::fs::write(&wrong, serde_yaml::to_string(&kc).unwrap()).unwrap();
    let out = dsa_plain(
        &[
            "create",
            "daemonset",
            "never",
            "--image=busybox",
            "--kubeconfig",
            wrong.to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(!srv
        .kubectl(newest, &["get", "daemonset", "never"], None)
        .status
        .success());
}

#[test]
fn convert_turns_kubectls_deployments_into_daemonsets_the_server_accepts() {
    let srv = Server::start();
    let k127 = common::kubectl_release("1.27");
    let newest = common::kubectl();
    for (name, kubectl) in [("example-127", k127.as_path()), ("example-new", newest)] {
        let deployment = srv.kubectl_ok(
            kubectl,
            &[
                "create",
                "deployment",
                name,
                "--image=nginx",
                "--dry-run=client",
                "-o",
                "yaml",
            ],
            None,
        );
        let out = dsa_plain(&["convert", "-f", "-"], Some(&deployment));
        assert!(out.status.success());
        let notes: Vec<String> = stderr(&out).lines().map(str::to_string).collect();
        assert_eq!(
            notes,
            vec![
                format!("note: Deployment {name}: kind Deployment -> DaemonSet"),
                format!("note: Deployment {name}: spec.replicas 1 dropped: a DaemonSet runs one pod on each node it selects"),
                format!("note: Deployment {name}: spec.strategy {{}} dropped: the DaemonSet default is RollingUpdate with maxUnavailable 1"),
            ]
        );
        let converted = stdout(&out);
        // the server validates it (dry run), then stores it
        let checked = srv.kubectl_ok(
            kubectl,
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&converted),
        );
        assert_eq!(
            checked.trim(),
            format!("daemonset.apps/{name} created (server dry run)")
        );
        let applied = srv.kubectl_ok(kubectl, &["apply", "-f", "-"], Some(&converted));
        assert_eq!(applied.trim(), format!("daemonset.apps/{name} created"));
        let ds = srv.get_json(&["daemonset", name]);
        assert_eq!(ds["spec"]["selector"]["matchLabels"], json!({"app": name}));
        assert_eq!(
            ds["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx"
        );
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
    }

    // a Deployment with a surge-only rolling update and a Recreate one, from a file, as JSON
    let mut surge: Value = serde_yaml::from_str(&srv.kubectl_ok(
        newest,
        &[
            "create",
            "deployment",
            "surge",
            "--image=nginx",
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        None,
    ))
    .unwrap();
    surge["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "50%"}});
    surge["spec"]["progressDeadlineSeconds"] = json!(600);
    let mut recreate = surge.clone();
    recreate["metadata"]["name"] = json!("recreate");
    recreate["spec"]["strategy"] = json!({"type": "Recreate"});
    let file = srv._dir.path().join("deployments.yaml");
    std::fs::write(
        &file,
        format!(
            "{}---\n{}",
            serde_yaml::to_string(&surge).unwrap(),
            serde_yaml::to_string(&recreate).unwrap()
        ),
    )
    .unwrap();
    let out = dsa_plain(
        &["convert", "-f", file.to_str().unwrap(), "-o", "json"],
        None,
    );
    assert!(out.status.success());
    assert!(stderr(&out).contains(
        "note: Deployment recreate: spec.strategy Recreate -> updateStrategy RollingUpdate with maxUnavailable 1"
    ));
    assert!(
        stderr(&out).contains("note: Deployment surge: spec.progressDeadlineSeconds 600 dropped")
    );
    let applied = srv.kubectl_ok(newest, &["apply", "-f", "-"], Some(&stdout(&out)));
    assert!(
        applied.contains("daemonset.apps/surge created"),
        "{applied}"
    );
    assert!(
        applied.contains("daemonset.apps/recreate created"),
        "{applied}"
    );
    assert_eq!(
        srv.get_json(&["daemonset", "surge"])["spec"]["updateStrategy"]["rollingUpdate"],
        json!({"maxUnavailable": 0, "maxSurge": "50%"})
    );
    assert_eq!(
        srv.get_json(&["daemonset", "recreate"])["spec"]["updateStrategy"]["rollingUpdate"],
        json!({"maxUnavailable": 1, "maxSurge": 0})
    );

    // what is not YAML fails with a message and prints nothing
    let out = dsa_plain(&["convert", "-f", "-"], Some("{ not: [yaml"));
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains("document 1 is not YAML or JSON"));
}

#[test]
fn why_explains_each_rule_and_agrees_with_the_controller() {
    let srv = Server::start();
    let newest = common::kubectl();
    let nodes = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"zone": "a"}}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2", "labels": {"zone": "a"}},
         "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n3", "labels": {"zone": "c"}},
         "spec": {"unschedulable": true}},
    ]});
    let ds = |name: &str, pod: Value| {
        let mut pod = pod;
        pod["containers"] = json!([{"name": "c", "image": "busybox"}]);
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
               "spec": {"selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}}, "spec": pod}}})
    };
    let daemonsets = json!({"apiVersion": "v1", "kind": "List", "items": [
        ds("plain", json!({})),
        ds("zone-b", json!({"nodeSelector": {"zone": "b"}})),
        ds("zone-a", json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}})),
    ]});
    srv.kubectl_ok(newest, &["apply", "-f", "-"], Some(&nodes.to_string()));
    srv.kubectl_ok(newest, &["apply", "-f", "-"], Some(&daemonsets.to_string()));

    // (daemonset, node, exit code, lines the report holds)
    let table: &[(&str, &str, i32, &[&str])] = &[
        (
            "plain",
            "n1",
            0,
            &[
                "daemonset default/plain on node n1: runs there",
                "  ok    nodeName       spec.nodeName is not set",
                "  ok    nodeSelector   node selector: none",
                "  ok    taint          the node has no taints",
                "  note  ready          the node has not reported a Ready condition yet",
            ],
        ),
        (
            "zone-b",
            "n1",
            1,
            &[
                "daemonset default/zone-b on node n1: does not run there",
                "  FAIL  nodeSelector   node selector: label zone is \"a\", not \"b\"",
            ],
        ),
        (
            "plain",
            "n2",
            1,
            &[
                "daemonset default/plain on node n2: does not run there (a pod already there keeps running)",
                "  FAIL  taint          taint dedicated=gpu:NoSchedule is not tolerated",
            ],
        ),
        (
            "zone-a",
            "n1",
            0,
            &["  ok    nodeAffinity   node affinity: label zone=a is In [a]"],
        ),
        (
            "zone-a",
            "n3",
            1,
            &[
                "  FAIL  nodeAffinity   node affinity: label zone=c is not In [a]",
                "  note  unschedulable  the node is cordoned (spec.unschedulable), which DaemonSets ignore",
            ],
        ),
        (
            "plain",
            "n3",
            0,
            &["  ok    taint          the node has no taints"],
        ),
    ];
    for (ds, node, code, lines) in table {
        let out = srv.dsa(&["why", ds, "--node", node], None);
        let text = stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "why {ds} --node {node}:\n{text}"
        );
        for line in *lines {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "why {ds} --node {node}: no line {line:?} in\n{text}"
            );
        }
    }

    // the controller, deciding with the same code, creates exactly the pods `why` says run
    let pods_of = |ds: &str| -> Vec<String> {
        let pods = srv.get_json(&["pods", "-l", &format!("app={ds}")]);
        let mut nodes: Vec<String> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
            .collect();
        nodes.sort();
        nodes
    };
    wait_for("the controller's pods", Duration::from_secs(30), || {
        (pods_of("plain") == ["n1", "n3"] && pods_of("zone-a") == ["n1"]).then_some(())
    });
    assert_eq!(pods_of("zone-b"), Vec::<String>::new());

    // errors are exit 2, apart from "does not run" (1)
    let out = srv.dsa(&["why", "missing", "--node", "n1"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("get daemonset default/missing"),
        "{}",
        stderr(&out)
    );
}
