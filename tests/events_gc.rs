//! Events and the garbage collector, end to end with real parts: the `daemonset-agent` binary as
//! server and agent on a private containerd, images from the loopback registry, kubectl (the
//! newest on the machine and 1.27) with default flags. Containers are observed independently
//! with `ctr` (task pids).
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::proc::{AgentArgs, Proc};
use common::{wait_for, Containerd};
use serde_json::Value;

const NODE: &str = "gc-1";

struct Cluster {
    /// First, so it drops first: removes everything the test made, pass or fail.
    _guard: common::Guard,
    dir: tempfile::TempDir,
    ctd: Containerd,
    server: Proc,
    kubeconfig: PathBuf,
    agent: Option<Proc>,
    ns: String,
}

impl Cluster {
    fn start() -> Cluster {
        let ctd = Containerd::start();
        let dir = tempfile::Builder::new()
            .prefix("dsa-evgc-")
            .tempdir_in("/tmp")
            .unwrap();
        let data = dir.path().join("server");
        let listen = format!("127.0.0.1:{}", common::free_port());
        let args = [
            "server",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
        ];
        let server = Proc::spawn(&args, dir.path().join("server.log"));
        let mut c = Cluster {
            _guard: common::Guard::new().containerd(&ctd).dir(dir.path()),
            kubeconfig: data.join("admin.kubeconfig"),
            ns: format!("evgc-{:08x}", rand::random::<u32>()),
            dir,
            ctd,
            server,
            agent: None,
        };
        wait_for("the server to answer", Duration::from_secs(20), || {
            (c.kubeconfig.exists() && c.kubectl(&["get", "--raw", "/readyz"]).status.success())
                .then_some(())
        });
        let state = c.dir.path().join("agent");
        let config = c.dir.path().join("agent.toml");
        std::fs::write(&config, "container-logs-to-journald = false\n").unwrap();
        let args = AgentArgs {
            config: &config,
            node: NODE,
            kubeconfig: &c.kubeconfig,
            socket: &c.ctd.socket,
            namespace: &c.ns,
            state_dir: &state,
        };
        c.agent = Some(Proc::agent(&args, c.dir.path().join("agent.log")));
        wait_for("the node", Duration::from_secs(20), || {
            c.kubectl(&["get", "node", NODE])
                .status
                .success()
                .then_some(())
        });
        c
    }

    fn kubectl_with(&self, kubectl: &Path, args: &[&str]) -> Output {
        Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(common::kubectl(), args)
    }

    fn ok_with(&self, kubectl: &Path, args: &[&str]) -> String {
        let out = self.kubectl_with(kubectl, args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}\n--- server ---\n{}\n--- agent ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.server.log_tail(30),
            self.agent
                .as_ref()
                .map(|a| a.log_tail(30))
                .unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(common::kubectl(), args)
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        let out = self.kubectl(args);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn apply(&self, yaml: &str) {
        let f = self
            .dir
            .path()
            .join(format!("{:08x}.yaml", rand::random::<u32>()));
        std::fs::write(&f, yaml).unwrap();
        self.ok(&["apply", "-f", f.to_str().unwrap()]);
    }

    /// The DaemonSet's pods: (name, uid, owner uids, phase).
    fn pods(&self, app: &str) -> Vec<(String, String, Vec<String>, String)> {
        let sel = format!("app={app}");
        let Some(v) = self.json(&["get", "pods", "-l", &sel, "-o", "json"]) else {
            return vec![];
        };
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let m = &p["metadata"];
                let owners = m["ownerReferences"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|o| o["uid"].as_str().unwrap().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    m["name"].as_str().unwrap().to_string(),
                    m["uid"].as_str().unwrap().to_string(),
                    owners,
                    p["status"]["phase"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Running tasks in the agent's containerd namespace: (container id, pid), from `ctr`.
    fn tasks(&self) -> Vec<(String, String)> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.ctd.socket)
            .args(["-n", &self.ns, "tasks", "ls"])
            .output()
            .expect("run ctr");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3 && f[2] == "RUNNING").then(|| (f[0].to_string(), f[1].to_string()))
            })
            .collect()
    }

    /// Waits until the DaemonSet `name` has one pod, running; returns its name.
    fn running_pod(&self, app: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let pods = self.pods(app);
            if pods.len() == 1 && pods[0].3 == "Running" && self.tasks().len() == 1 {
                return pods[0].0.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no running pod of {app}: {pods:?}, tasks {:?}\n--- agent ---\n{}\n--- server ---\n{}",
                self.tasks(),
                self.agent.as_ref().map(|a| a.log_tail(40)).unwrap_or_default(),
                self.server.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn ds_yaml(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      hostNetwork: true\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: main\n        image: {image}\n        command: [sleep, '3600']\n"
    )
}

/// describe shows the kubelet's and the DaemonSet controller's events (newest kubectl and 1.27);
/// `kubectl get events` and `kubectl events` list them; a broken image's back-off is aggregated
/// into one event with a count.
#[test]
fn describe_and_get_events_show_what_happened() {
    let registry = common::registry();
    let c = Cluster::start();
    c.apply(&ds_yaml("mon", &format!("{registry}/busybox:v1")));
    let pod = c.running_pod("mon");
    let old = common::kubectl_release("1.27");
    for kubectl in [common::kubectl(), old.as_path()] {
        let described = wait_for("Started in describe pod", Duration::from_secs(20), || {
            let d = c.ok_with(kubectl, &["describe", "pod", &pod]);
            d.contains("Started").then_some(d)
        });
        for want in [
            "Events:",
            "Pulled",
            "Created",
            "Started",
            "kubelet",
            "Created container main",
        ] {
            assert!(
                described.contains(want),
                "{kubectl:?} describe pod lacks {want}:\n{described}"
            );
        }
        let ds = c.ok_with(kubectl, &["describe", "ds", "mon"]);
        assert!(
            ds.contains("SuccessfulCreate") && ds.contains(&format!("Created pod: {pod}")),
            "{ds}"
        );
        // `kubectl events` is beta in 1.26 and 1.27, GA from 1.28
        let listed = c.ok_with(kubectl, &["events", "--for", &format!("pod/{pod}")]);
        assert!(listed.contains("Started"), "{listed}");
    }
    let node = c.ok(&["describe", "node", NODE]);
    assert!(node.contains("Starting kubelet."), "{node}");
    let all = c.ok(&["get", "events"]);
    assert!(
        all.contains("LAST SEEN") && all.contains(&format!("pod/{pod}")),
        "{all}"
    );
    let selected = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=SuccessfulCreate",
        "-o",
        "name",
    ]);
    assert_eq!(selected.lines().count(), 1, "{selected}");
    // core Events select by `source` (the reporting component), as upstream's field set has it
    let by_source = c
        .json(&[
            "get",
            "events",
            "--field-selector",
            "source=kubelet",
            "-o",
            "json",
        ])
        .unwrap();
    let sources: Vec<&Value> = by_source["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["source"]["component"])
        .collect();
    assert!(
        !sources.is_empty() && sources.iter().all(|s| *s == "kubelet"),
        "{sources:?}"
    );
    // the same events through events.k8s.io/v1, converted as upstream converts them
    let path = format!(
        "/apis/events.k8s.io/v1/namespaces/default/events?fieldSelector=regarding.name%3D{pod},reason%3DStarted"
    );
    let v1: Value = serde_json::from_str(&c.ok(&["get", "--raw", &path])).unwrap();
    let started = &v1["items"][0];
    assert_eq!(v1["kind"], "EventList", "{v1}");
    assert_eq!(started["apiVersion"], "events.k8s.io/v1", "{v1}");
    assert_eq!(started["regarding"]["name"], pod.as_str());
    assert_eq!(started["reportingController"], "kubelet");
    assert_eq!(started["deprecatedSource"]["component"], "kubelet");
    assert!(
        started["note"]
            .as_str()
            .unwrap()
            .contains("Started container"),
        "{started}"
    );
    assert!(started.get("message").is_none(), "{started}");
    let name = started["metadata"]["name"].as_str().unwrap();
    let core = c.json(&["get", "event", name, "-o", "json"]).unwrap();
    assert_eq!(core["message"], started["note"]);
    // written through events.k8s.io (as client-go's new recorder does), read through core v1
    let ev_file = c.dir.path().join("ev.yaml");
    std::fs::write(
        &ev_file,
        format!(
            "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {{name: probe-1, namespace: default}}\neventTime: \"2030-01-01T00:00:00.000000Z\"\nreportingController: example.com/prober\nreportingInstance: prober-0\naction: Probe\nreason: ProbeWarning\ntype: Warning\nnote: redirected to another host\nregarding: {{kind: Pod, namespace: default, name: {pod}}}\n"
        ),
    )
    .unwrap();
    c.ok(&["create", "-f", ev_file.to_str().unwrap()]);
    let core = c.json(&["get", "event", "probe-1", "-o", "json"]).unwrap();
    assert_eq!(core["message"], "redirected to another host");
    assert_eq!(core["involvedObject"]["name"], pod.as_str());
    assert_eq!(core["reportingComponent"], "example.com/prober");
    let listed = c.ok(&["get", "events.v1.events.k8s.io", "probe-1"]);
    assert!(listed.contains("ProbeWarning"), "{listed}");
    // what events.k8s.io requires of a new event
    std::fs::write(
        &ev_file,
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: bad, namespace: default}\nreason: X\n",
    )
    .unwrap();
    let refused = c.kubectl(&["create", "-f", ev_file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("eventTime: Required value"),
        "{err}"
    );
    // the official Python client, selecting by the involved object
    let script = "import sys\nfrom kubernetes import client, config\n\
        config.load_kube_config(config_file=sys.argv[1])\n\
        evs = client.CoreV1Api().list_namespaced_event('default', \
        field_selector='involvedObject.kind=DaemonSet,involvedObject.name=mon').items\n\
        print(sorted({(e.reason, e.source.component) for e in evs}))\n";
    let out = Command::new(common::python_client())
        .args(["-c", script])
        .arg(&c.kubeconfig)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.trim(),
        "[('SuccessfulCreate', 'daemonset-controller')]",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `kubectl get events -w` streams what happens next
    let mut watch = Command::new(common::kubectl())
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args([
            "get",
            "events",
            "-w",
            "--field-selector",
            "reason=SuccessfulCreate",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    c.apply(&ds_yaml("broken", &format!("{registry}/no-such-image:v1")));
    let bad = wait_for("a pod of broken", Duration::from_secs(30), || {
        c.pods("broken").first().map(|p| p.0.clone())
    });
    let streamed = wait_for("the watch to stream it", Duration::from_secs(30), || {
        rx.try_iter().find(|l| l.contains("daemonset/broken"))
    });
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        streamed.contains(&format!("Created pod: {bad}")),
        "{streamed}"
    );
    let described = wait_for("a back-off counted twice", Duration::from_secs(90), || {
        let d = c.ok(&["describe", "pod", &bad]);
        // describe prints "(xN over T)" for an event seen N > 1 times
        let counted = d.lines().any(|l| l.contains("BackOff") && l.contains("(x"));
        counted.then_some(d)
    });
    for want in [
        "Failed to pull image",
        "Error: ErrImagePull",
        "Back-off pulling image",
        "Pulling",
    ] {
        assert!(
            described.contains(want),
            "describe lacks {want}:\n{described}"
        );
    }
}

/// `--cascade=orphan` leaves the pod and its container; a new DaemonSet adopts the pod and the
/// container keeps its pid. Foreground deletion keeps the DaemonSet (with its deletionTimestamp)
/// until its pod is gone; background deletion removes the pod after the DaemonSet.
#[test]
fn orphan_adopt_foreground_and_background_deletion() {
    let registry = common::registry();
    let c = Cluster::start();
    let yaml = ds_yaml("mon", &format!("{registry}/busybox:v1"));
    c.apply(&yaml);
    let pod = c.running_pod("mon");
    let tasks = c.tasks();
    let old_uid = c.json(&["get", "ds", "mon", "-o", "json"]).unwrap()["metadata"]["uid"].clone();

    c.ok(&["delete", "ds", "mon", "--cascade=orphan"]);
    assert!(
        !c.kubectl(&["get", "ds", "mon"]).status.success(),
        "the DaemonSet is gone"
    );
    let pods = c.pods("mon");
    assert_eq!(pods.len(), 1);
    assert_eq!(
        (&pods[0].0, pods[0].2.is_empty()),
        (&pod, true),
        "orphaned: {pods:?}"
    );
    assert_eq!(c.tasks(), tasks, "its container runs on");

    c.apply(&yaml);
    let new_uid = c.json(&["get", "ds", "mon", "-o", "json"]).unwrap()["metadata"]["uid"].clone();
    assert_ne!(new_uid, old_uid);
    wait_for("the orphan adopted", Duration::from_secs(30), || {
        let pods = c.pods("mon");
        (pods.len() == 1 && pods[0].2 == [new_uid.as_str().unwrap()]).then_some(())
    });
    // the agent reported the adopted pod ready to the new DaemonSet's status
    wait_for("numberReady 1", Duration::from_secs(30), || {
        let ds = c.json(&["get", "ds", "mon", "-o", "json"])?;
        (ds["status"]["numberReady"] == 1).then_some(())
    });
    assert_eq!(c.pods("mon")[0].0, pod, "the same pod");
    assert_eq!(c.tasks(), tasks, "the same container, same pid");

    // foreground: the DaemonSet stays, marked, while its pod terminates
    c.ok(&[
        "delete",
        "ds",
        "mon",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let marked = c
        .json(&["get", "ds", "mon", "-o", "json"])
        .expect("still there");
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    assert_eq!(
        marked["metadata"]["finalizers"],
        serde_json::json!(["foregroundDeletion"])
    );
    wait_for("the DaemonSet gone", Duration::from_secs(60), || {
        (!c.kubectl(&["get", "ds", "mon"]).status.success()).then_some(())
    });
    assert!(c.pods("mon").is_empty(), "its pod went first");
    wait_for("the container stopped", Duration::from_secs(30), || {
        c.tasks().is_empty().then_some(())
    });

    // background: the DaemonSet goes at once, its pod after it
    c.apply(&yaml);
    c.running_pod("mon");
    c.ok(&["delete", "ds", "mon", "--wait=false"]);
    assert!(!c.kubectl(&["get", "ds", "mon"]).status.success());
    wait_for("the pod collected", Duration::from_secs(60), || {
        (c.pods("mon").is_empty() && c.tasks().is_empty()).then_some(())
    });
}

/// With the API down the agent still restarts a killed container (no container start waits for
/// an event to be written); the events it cannot write are dropped and counted.
#[test]
fn containers_start_while_the_api_is_down() {
    let registry = common::registry();
    let mut c = Cluster::start();
    c.apply(&ds_yaml("mon", &format!("{registry}/busybox:v1")));
    c.running_pod("mon");
    let before = c.tasks();
    c.server.stop();
    let ctr = |args: &[&str]| {
        let st = Command::new("ctr")
            .arg("--address")
            .arg(&c.ctd.socket)
            .args(["-n", &c.ns])
            .args(args)
            .status()
            .expect("run ctr");
        assert!(st.success(), "ctr {args:?}");
    };
    ctr(&["tasks", "kill", "-s", "SIGKILL", &before[0].0]);
    let after = wait_for("the container restarted", Duration::from_secs(60), || {
        let now = c.tasks();
        (now.len() == 1 && now != before).then_some(now)
    });
    assert!(after[0].0.ends_with("_1"), "restart 1: {after:?}");
    let agent = c.agent.as_ref().unwrap();
    wait_for(
        "events dropped and counted",
        Duration::from_secs(30),
        || agent.log().contains("events dropped").then_some(()),
    );
}
