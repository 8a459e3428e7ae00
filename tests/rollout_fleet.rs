//! Rollouts across a fleet, with real parts only: the `daemonset-agent` binary as server and as
//! five agents (nodes f0..f4, each with a containerd namespace of its own and of the run, on one
//! real containerd + runc), images from the loopback registry, and the real kubectl. A sampler reads containerd
//! itself every 100 ms (the running tasks of each node's namespace, over containerd's gRPC API,
//! not the API under test) and checks the bound of each rollout: never more than maxUnavailable
//! nodes without a running pod, never more than maxSurge nodes running two.
mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::proc::Proc;
use common::{wait_for, Containerd};
use containerd_client::services::v1::ListTasksRequest;
use daemonset_agent::runtime::client::Ctd;

const NODES: usize = 5;
const ROLLOUT: Duration = Duration::from_secs(120);

/// A server and `NODES` agents on one containerd.
struct Fleet {
    /// First, so it drops first: removes everything the test made, pass or fail.
    _guard: common::Guard,
    dir: tempfile::TempDir,
    ctd: Containerd,
    server: Proc,
    listen: String,
    kubeconfig: PathBuf,
    agents: Vec<Proc>,
    /// Unique to the fleet, in its containerd namespaces (as tests/common/fleet.rs does): runc's
    /// state directory (`/run/containerd/runc/NS`) and the cgroup parent (`/daemonset-agent/NS`)
    /// are per namespace and shared by every containerd of the machine, and this file's tests
    /// run in parallel. With fixed names one fleet's teardown killed another's containers (see
    /// `a_teardown_leaves_another_containerds_containers_running`) and still waits on its busy
    /// cgroups.
    run: String,
}

fn spawn_server(dir: &std::path::Path, listen: &str) -> Proc {
    let data = dir.join("server");
    let args: Vec<String> = vec![
        "server".into(),
        "--data-dir".into(),
        data.to_string_lossy().into(),
        "--listen".into(),
        listen.to_string(),
    ];
    Proc::spawn(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        dir.join(format!("server-{}.log", rand_suffix())),
    )
}

fn node(i: usize) -> String {
    format!("f{i}")
}

impl Fleet {
    fn start() -> Fleet {
        Fleet::start_with(NODES)
    }

    /// A server and `agents` agents (nodes f0, f1, ...).
    fn start_with(agents: usize) -> Fleet {
        let ctd = Containerd::start();
        let dir = tempfile::Builder::new()
            .prefix("dsa-fleet-")
            .tempdir_in("/tmp")
            .unwrap();
        let listen = format!("127.0.0.1:{}", common::free_port());
        let kubeconfig = dir.path().join("server/admin.kubeconfig");
        let guard = common::Guard::new().containerd(&ctd).dir(dir.path());
        let server = spawn_server(dir.path(), &listen);
        let mut f = Fleet {
            _guard: guard,
            server,
            dir,
            ctd,
            listen,
            kubeconfig,
            agents: vec![],
            run: rand_suffix(),
        };
        f.wait_server();
        for i in 0..agents {
            let agent = f.spawn_agent(i);
            f.agents.push(agent);
        }
        f
    }

    /// Starts the server again on its data directory and address.
    fn restart_server(&mut self) {
        self.server = spawn_server(self.dir.path(), &self.listen);
        self.wait_server();
    }

    fn wait_server(&self) {
        wait_for("the server to answer", Duration::from_secs(20), || {
            (self.kubeconfig.exists()
                && self.kubectl(&["get", "--raw", "/readyz"]).status.success())
            .then_some(())
        });
    }

    /// Node `i`'s containerd namespace.
    fn namespace(&self, i: usize) -> String {
        format!("ns-roll{}-{}", self.run, node(i))
    }

    fn spawn_agent(&self, i: usize) -> Proc {
        let n = node(i);
        let config = self.dir.path().join(format!("agent-{n}.toml"));
        std::fs::write(&config, "container-logs-to-journald = false\n").unwrap();
        let args: Vec<String> = [
            "agent",
            "--config",
            config.to_str().unwrap(),
            "--node-name",
            &n,
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap(),
            "--containerd-socket",
            self.ctd.socket.to_str().unwrap(),
            "--containerd-namespace",
            &self.namespace(i),
            "--state-dir",
            self.dir.path().join(format!("agent-{n}")).to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = self
            .dir
            .path()
            .join(format!("agent-{n}-{}.log", rand_suffix()));
        Proc::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), log)
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
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&a)).unwrap()
    }

    fn apply(&self, yaml: &str) {
        let f = self.dir.path().join(format!("ds-{}.yaml", rand_suffix()));
        std::fs::write(&f, yaml).unwrap();
        self.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
    }

    /// node -> the controller-revision-hash of its pods that are not terminating.
    fn hashes(&self) -> Vec<(String, String)> {
        let pods = self.json(&["get", "pods", "-l", "app=roll"]);
        let mut v: Vec<(String, String)> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                (
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                    p["metadata"]["labels"]["controller-revision-hash"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// The DaemonSet's current revision (of its newest ControllerRevision).
    fn current_hash(&self) -> String {
        let crs = self.json(&["get", "controllerrevisions", "-l", "app=roll"]);
        let newest = crs["items"]
            .as_array()
            .unwrap()
            .iter()
            .max_by_key(|c| c["revision"].as_i64().unwrap_or(0))
            .cloned()
            .unwrap();
        newest["metadata"]["labels"]["controller-revision-hash"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits until every node runs one ready pod of the current revision.
    fn wait_rolled_out(&self, what: &str) -> String {
        let out = self.kubectl(&["rollout", "status", "ds/roll", "--timeout=120s"]);
        assert!(
            out.status.success(),
            "{what}: rollout status: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let hash = self.current_hash();
        wait_for(what, ROLLOUT, || {
            let h = self.hashes();
            (h.len() == NODES && h.iter().all(|(_, x)| *x == hash)).then_some(())
        });
        hash
    }

    fn set_image(&self, tag: &str) {
        let image = format!("{}/busybox:{tag}", common::registry());
        self.kubectl_ok(&["set", "image", "ds/roll", &format!("c={image}")]);
    }
}

fn rand_suffix() -> String {
    format!("{:x}", rand::random::<u32>())
}

/// The DaemonSet of these tests: a shell that leaves at once on SIGTERM, ready when it runs.
fn daemonset(strategy: &str, min_ready: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: roll
  namespace: default
spec:
  selector:
    matchLabels: {{app: roll}}
  minReadySeconds: {min_ready}
  updateStrategy: {strategy}
  template:
    metadata:
      labels: {{app: roll}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: c
        image: {reg}/busybox:v1
        command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
"#,
        reg = common::registry()
    )
}

/// What the sampler saw: per sample, the nodes without a running task and those with two.
#[derive(Default, Debug)]
struct Seen {
    samples: usize,
    worst_down: usize,
    worst_double: usize,
    over: Vec<String>,
}

/// Reads containerd every 100 ms until stopped; `limits` = (maxUnavailable, maxSurge).
struct Sampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(f: &Fleet, limits: (usize, usize)) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let socket = f.ctd.socket.clone();
        let namespaces: Vec<String> = (0..NODES).map(|i| f.namespace(i)).collect();
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut ctds = Vec::new();
                for ns in &namespaces {
                    ctds.push(Ctd::connect(&socket, ns).await.unwrap());
                }
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                while !stop2.load(Ordering::SeqCst) {
                    tick.tick().await;
                    // All nodes asked at once, so one sample is one moment (asked in turn on a
                    // loaded machine, a sample could combine two moments); a failed query
                    // drops the sample rather than counting a node as down.
                    let Ok(running) =
                        futures::future::try_join_all(ctds.iter().map(|c| async move {
                            let tasks = c
                                .tasks()
                                .list(c.req(ListTasksRequest::default()))
                                .await?
                                .into_inner()
                                .tasks;
                            Ok::<usize, tonic::Status>(
                                tasks
                                    .iter()
                                    .filter(|t| {
                                        t.status
                                            == containerd_client::types::v1::Status::Running as i32
                                    })
                                    .count(),
                            )
                        }))
                        .await
                    else {
                        continue;
                    };
                    let down = running.iter().filter(|n| **n == 0).count();
                    let double = running.iter().filter(|n| **n >= 2).count();
                    let mut s = seen2.lock().unwrap();
                    s.samples += 1;
                    s.worst_down = s.worst_down.max(down);
                    s.worst_double = s.worst_double.max(double);
                    if down > limits.0 || double > limits.1 {
                        s.over.push(format!(
                            "{} running tasks per node {running:?}",
                            chrono::Utc::now().format("%H:%M:%S%.3f")
                        ));
                    }
                }
            });
        });
        Sampler {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Waits until `n` more samples were taken (time passing, as containerd saw it).
    fn wait_samples(&self, n: usize) {
        let from = self.seen.lock().unwrap().samples;
        wait_for("samples", Duration::from_secs(30), || {
            (self.seen.lock().unwrap().samples >= from + n).then_some(())
        });
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

fn check(what: &str, seen: &Seen, limits: (usize, usize)) {
    eprintln!(
        "{what}: {} samples, worst {} node(s) without a running pod (budget {}), worst {} node(s) with two (surge {})",
        seen.samples, seen.worst_down, limits.0, seen.worst_double, limits.1
    );
    assert!(seen.samples > 10, "{what}: the sampler ran: {seen:?}");
    assert!(
        seen.over.is_empty(),
        "{what}: over the budget: {:?}",
        seen.over
    );
}

/// One fleet, the rollouts one after the other: 40% of 5 lets two nodes go at once; maxSurge 2
/// starts new pods beside old ones and never takes a node down; a bad image stops no node and
/// `kubectl rollout undo` heals; OnDelete waits for `kubectl delete pod`.
#[test]
fn rollouts_hold_their_bound_across_the_fleet() {
    let f = Fleet::start();
    f.apply(&daemonset(
        "{type: RollingUpdate, rollingUpdate: {maxUnavailable: 40%}}",
        1,
    ));
    f.wait_rolled_out("first rollout");

    // 40% of 5 = 2 nodes at once, never 3
    let s = Sampler::start(&f, (2, 0));
    f.set_image("v2");
    f.wait_rolled_out("40% to v2");
    let seen = s.finish();
    check("maxUnavailable 40%", &seen, (2, 0));
    assert_eq!(seen.worst_down, 2, "two nodes went at once");

    // maxSurge 2: no node ever without its pod, at most two with two
    f.kubectl_ok(&[
        "patch",
        "ds/roll",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"maxUnavailable":0,"maxSurge":2}}}}"#,
    ]);
    let s = Sampler::start(&f, (0, 2));
    f.set_image("v1");
    f.wait_rolled_out("surge to v1");
    let seen = s.finish();
    check("maxSurge 2", &seen, (0, 2));
    assert!(seen.worst_double >= 1, "new pods started beside old ones");

    // a bad image: every node keeps its pod; the status says why; undo heals
    f.kubectl_ok(&[
        "patch",
        "ds/roll",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"maxUnavailable":1,"maxSurge":0}}}}"#,
    ]);
    let good = f.current_hash();
    let s = Sampler::start(&f, (0, 0));
    f.set_image("does-not-exist");
    let why = wait_for("the rollout to say why it stalls", ROLLOUT, || {
        let ds = f.json(&["get", "ds", "roll"]);
        let c = ds["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Progressing" && c["status"] == "False")?
            .clone();
        Some(c["message"].as_str()?.to_string())
    });
    assert!(
        why.starts_with("ErrImagePull on node f") && why.contains("does-not-exist"),
        "the first failing node and the reason: {why}"
    );
    assert!(
        f.hashes().iter().all(|(_, h)| *h == good),
        "{:?}",
        f.hashes()
    );
    let out = f.kubectl_ok(&["rollout", "undo", "ds/roll"]);
    assert!(out.contains("rolled back"), "{out}");
    assert_eq!(f.wait_rolled_out("undo"), good);
    let seen = s.finish();
    check("bad image", &seen, (0, 0));

    // OnDelete: nothing moves until a pod is deleted
    f.kubectl_ok(&[
        "patch",
        "ds/roll",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#,
    ]);
    f.set_image("v2");
    let new = wait_for("the new revision", ROLLOUT, || {
        let h = f.current_hash();
        (h != good).then_some(h)
    });
    // every node pulled it (their old pods say so), and still runs the old one
    wait_for("all nodes pre-pulled", ROLLOUT, || {
        let pods = f.json(&["get", "pods", "-l", "app=roll"]);
        let all = pods["items"].as_array()?.iter().all(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "daemonset-agent.io/NextRevisionReady"
                        && c["status"] == "True"
                        && c["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with(&format!("revision {new}:")))
                })
            })
        });
        all.then_some(())
    });
    assert!(f.hashes().iter().all(|(_, h)| *h == good));
    let pods = f.json(&[
        "get",
        "pods",
        "-l",
        "app=roll",
        "--field-selector",
        "spec.nodeName=f2",
    ]);
    let victim = pods["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    f.kubectl_ok(&["delete", "pod", &victim]);
    wait_for("f2 runs the new revision", ROLLOUT, || {
        let h = f.hashes();
        h.iter().any(|(n, x)| n == "f2" && *x == new).then_some(())
    });
    let h = f.hashes();
    assert_eq!(h.iter().filter(|(_, x)| *x == new).count(), 1, "{h:?}");
}

/// kill -9 of the server and of an agent in the middle of a rollout (maxUnavailable 1, 2 s
/// minReadySeconds): both come back, the rollout finishes, the bound held throughout.
#[test]
fn deaths_mid_rollout_do_not_break_the_bound() {
    let mut f = Fleet::start();
    f.apply(&daemonset(
        "{type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}",
        2,
    ));
    let old = f.wait_rolled_out("first rollout");
    let s = Sampler::start(&f, (1, 0));
    f.set_image("v2");
    wait_for("the first node replaced", ROLLOUT, || {
        f.hashes().iter().any(|(_, h)| *h != old).then_some(())
    });
    eprintln!("{} server kill", chrono::Utc::now().format("%H:%M:%S%.3f"));
    f.server.kill();
    // the agents keep what is bound: no node loses its pod while the server is away
    s.wait_samples(15);
    f.restart_server();
    eprintln!("{} server back", chrono::Utc::now().format("%H:%M:%S%.3f"));
    // an agent whose node still runs the old revision dies, and comes back
    let hashes = f.hashes();
    let i = (0..NODES)
        .find(|i| hashes.iter().any(|(n, h)| *n == node(*i) && *h == old))
        .expect("a node still on the old revision");
    eprintln!(
        "{} agent {i} kill",
        chrono::Utc::now().format("%H:%M:%S%.3f")
    );
    f.agents[i].kill();
    s.wait_samples(15);
    f.agents[i] = f.spawn_agent(i);
    eprintln!(
        "{} agent {i} back",
        chrono::Utc::now().format("%H:%M:%S%.3f")
    );
    f.wait_rolled_out("after the deaths");
    let seen = s.finish();
    if !seen.over.is_empty() || std::env::var_os("DSA_KEEP_LOGS").is_some() {
        let keep = format!("/tmp/deaths-logs-{}", std::process::id());
        std::fs::create_dir_all(&keep).unwrap();
        for e in std::fs::read_dir(f.dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                std::fs::copy(
                    e.path(),
                    format!("{keep}/{}", e.file_name().to_string_lossy()),
                )
                .unwrap();
            }
        }
        eprintln!("logs kept in {keep}");
    }
    check("deaths mid-rollout", &seen, (1, 0));
}

/// A test's teardown (its [`common::Guard`]) removes the containers of its own containerd only,
/// also when another containerd of the machine uses a namespace of the same name at the same
/// time: runc keeps every containerd's containers of namespace NS in one directory
/// (`/run/containerd/runc/NS`), and the guard deleted (`runc delete --force`) whatever it found
/// there. Two copies of this file at once (or two of its tests, with one namespace name per
/// node) lost containers that way: a node of a rollout under test went down by itself, no agent
/// involved (the second failure of `deaths_mid_rollout_do_not_break_the_bound`).
#[test]
fn a_teardown_leaves_another_containerds_containers_running() {
    let ns = format!("ns-guard{}", rand_suffix());
    let theirs = Containerd::start();
    let their_guard = common::Guard::new().containerd(&theirs);
    let image = format!("{}/busybox:v1", common::registry());
    theirs.ctr_ok(&ns, &["images", "pull", "--plain-http", &image]);
    theirs.ctr_ok(&ns, &["run", "-d", &image, "c1", "sleep", "100000"]);
    let running = |ctd: &Containerd| ctd.ctr_ok(&ns, &["tasks", "ls"]);
    let before = running(&theirs);
    assert!(before.contains("RUNNING"), "{before}");

    // ours: the same namespace name, a container of its own, torn down
    let ours = Containerd::start();
    let our_guard = common::Guard::new().containerd(&ours);
    ours.ctr_ok(&ns, &["images", "pull", "--plain-http", &image]);
    ours.ctr_ok(&ns, &["run", "-d", &image, "c2", "sleep", "100000"]);
    drop(our_guard);
    drop(ours);
    let after = running(&theirs);
    drop(their_guard);
    // ctr's cgroup parent (`/NS`, not the agent's `/daemonset-agent/NS` a guard removes)
    for controller in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(controller.path().join(&ns));
    }

    assert_eq!(
        after, before,
        "the other containerd's container still runs, the same process"
    );
}

fn generation(f: &Fleet) -> i64 {
    f.json(&["get", "ds", "roll"])["metadata"]["generation"]
        .as_i64()
        .unwrap()
}

/// kubectl's own DaemonSet history checks (test/cmd/apps.sh, run_daemonset_history_tests), against
/// the server alone: revisions with the change-cause, history by revision, undo (to a revision, a
/// missing one refused, dry runs changing nothing), restart, and `set` bumping the generation by
/// one where an identical re-apply does not.
#[test]
fn history_undo_restart_and_set_as_kubectl_expects() {
    let f = Fleet::start_with(0);
    let text = daemonset(
        "{type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}",
        0,
    );
    f.apply(&text);
    let revisions = |n: usize| {
        wait_for("revisions", Duration::from_secs(20), || {
            let crs = f.json(&["get", "controllerrevisions", "-l", "app=roll"]);
            let items = crs["items"].as_array()?.clone();
            (items.len() == n).then_some(items)
        })
    };
    revisions(1);
    assert_eq!(generation(&f), 1);
    f.apply(&text);
    assert_eq!(generation(&f), 1, "an identical re-apply changes nothing");

    f.kubectl_ok(&["annotate", "ds/roll", "kubernetes.io/change-cause=to v2"]);
    f.set_image("v2");
    assert_eq!(generation(&f), 2);
    let crs = revisions(2);
    let v2 = crs.iter().find(|c| c["revision"] == 2).unwrap();
    assert_eq!(
        v2["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "to v2"
    );
    f.kubectl_ok(&["set", "env", "ds/roll", "MODE=fast"]);
    assert_eq!(generation(&f), 3);
    f.kubectl_ok(&["set", "resources", "ds/roll", "--limits=memory=64Mi"]);
    assert_eq!(generation(&f), 4);
    revisions(4);

    let history = f.kubectl_ok(&["rollout", "history", "ds/roll"]);
    assert!(
        history.contains("REVISION") && history.contains("to v2"),
        "{history}"
    );
    let rev2 = f.kubectl_ok(&["rollout", "history", "ds/roll", "--revision=2"]);
    assert!(
        rev2.contains("busybox:v2") && !rev2.contains("MODE"),
        "{rev2}"
    );

    let out = f.kubectl(&["rollout", "undo", "ds/roll", "--to-revision=99"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unable to find specified revision"), "{err}");

    let template = |f: &Fleet| f.json(&["get", "ds", "roll"])["spec"]["template"].clone();
    let before = template(&f);
    for dry in ["--dry-run=client", "--dry-run=server"] {
        f.kubectl_ok(&["rollout", "undo", "ds/roll", "--to-revision=1", dry]);
        assert_eq!(template(&f), before, "{dry} changed nothing");
        assert_eq!(generation(&f), 4, "{dry}");
    }
    let out = f.kubectl_ok(&["rollout", "undo", "ds/roll", "--to-revision=2"]);
    assert!(out.contains("rolled back"), "{out}");
    let t = template(&f);
    assert!(t["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .ends_with("busybox:v2"));
    assert!(t["spec"]["containers"][0]["env"].is_null(), "{t}");
    assert_eq!(generation(&f), 5);

    f.kubectl_ok(&["rollout", "restart", "ds/roll"]);
    assert_eq!(generation(&f), 6);
    let t = template(&f);
    assert!(
        t["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string(),
        "{t}"
    );
    // no nodes: nothing to wait for
    let out = f.kubectl_ok(&["rollout", "status", "ds/roll", "--timeout=20s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
}
