//! The fault matrix (issue 15): one server and three agents (each node its own containerd and
//! containerd namespace, all on a CNI network of the fleet's own) run a DaemonSet and a
//! ReplicaSet of busybox pods while faults are injected one at a time, in a seeded random order
//! at seeded random points; after each one a checker reads containerd, runc, the agents' state
//! directories, the network and the API themselves and waits, with a deadline, until every
//! invariant holds:
//!
//! - every wanted pod (bound to a node, not terminating) has exactly one running task per
//!   container, and the API says so (Running, ready, the same container id); no container, task,
//!   shim or runc state runs for a pod that is not wanted;
//! - nothing leaks: no lease, no unfinished ingest, no active snapshot without its container, no
//!   content blob that no image reaches, no image without its content, no mount, network
//!   namespace, sandbox record, address reservation or veth of a pod that is gone;
//! - the DaemonSet's and the ReplicaSet's status agree with their pods, every Node is Ready, no
//!   pod is left terminating;
//! - every write the API acknowledged (2xx) is there.
//!
//! The clock step moves one agent's wall clock only (the host clock is shared by the fleet): that
//! agent runs under libfaketime (`FAKETIME_DONT_FAKE_MONOTONIC=1`, so tokio's timers keep real
//! time), and the step is checked to reach it (its Lease's renewTime jumps by the step).
//!
//! The time to converge after each fault is measured; the table at the end gives, per fault,
//! the count, the violations and the p50/p99 convergence.
//!
//! ```text
//! cargo test --test faults                              # smoke: a few of each (CI)
//! DSA_FAULTS=full cargo test --test faults -- --nocapture   # the full matrix
//! DSA_FAULTS_SEED=1234 ...                              # replay a run (its seed is printed)
//! DSA_FAULTS_ONLY=agent-kill,shim-kill ...              # only these faults
//! DSA_FAULTS_REPORT=FILE ...                            # the table as JSON too
//! DSA_FAULTS_MINUTES=40 ...                              # inject no fault after 40 min
//! ```
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fleet::{node_condition, Fleet, FleetOptions};
use common::tcpproxy::{Mode, TcpProxy};
use containerd_client::services::v1::snapshots::ListSnapshotsRequest;
use containerd_client::services::v1::{
    DeleteImageRequest, ListContainersRequest, ListContentRequest, ListImagesRequest,
    ListRequest as ListLeasesRequest, ListStatusesRequest, ListTasksRequest,
};
use daemonset_agent::runtime::client::{Ctd, SNAPSHOTTER};
use daemonset_agent::runtime::labels;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// The node-monitor grace period the fleet's server runs with, and the agents' Lease duration
/// (renewed every quarter of it): short, so a frozen agent's node goes Unknown within seconds.
const GRACE: &str = "15s";
const LEASE_SECONDS: u32 = 12;
/// How long the fleet may take to converge after one fault.
const CONVERGE: Duration = Duration::from_secs(120);
const RS_REPLICAS: usize = 3;
/// The size of each agent's state directory (a tmpfs, so it can be filled: ENOSPC).
const STATE_MIB: u32 = 32;
/// The node whose agent runs under libfaketime, for the clock step.
const CLOCK_NODE: usize = 2;
/// The clock step, and how long the fleet is watched after each step (both ways).
const CLOCK_STEP_S: i64 = 3600;
const CLOCK_HOLD: Duration = Duration::from_secs(30);
/// The kubelet's longest restart back-off (core::plan's cap), in seconds.
const BACKOFF_MAX_S: u64 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    AgentKill,
    AgentStop,
    ContainerdKill,
    ShimKill,
    ServerKillWrites,
    CorruptCache,
    Partition,
    RegistryDown,
    DiskFull,
    ServerDown,
    ClockStep,
}

impl Fault {
    const ALL: [Fault; 11] = [
        Fault::AgentKill,
        Fault::AgentStop,
        Fault::ContainerdKill,
        Fault::ShimKill,
        Fault::ServerKillWrites,
        Fault::CorruptCache,
        Fault::Partition,
        Fault::RegistryDown,
        Fault::DiskFull,
        Fault::ServerDown,
        Fault::ClockStep,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::AgentKill => "agent-kill",
            Fault::AgentStop => "agent-sigstop",
            Fault::ContainerdKill => "containerd-kill",
            Fault::ShimKill => "shim-kill",
            Fault::ServerKillWrites => "server-kill-writes",
            Fault::CorruptCache => "corrupt-cache",
            Fault::Partition => "partition",
            Fault::RegistryDown => "registry-down",
            Fault::DiskFull => "state-dir-full",
            Fault::ServerDown => "server-down",
            Fault::ClockStep => "clock-step",
        }
    }

    /// (smoke, full) counts.
    fn counts(self) -> (usize, usize) {
        match self {
            Fault::AgentKill => (3, 100),
            Fault::AgentStop => (1, 10),
            Fault::ContainerdKill => (2, 20),
            Fault::ShimKill => (1, 10),
            Fault::ServerKillWrites => (1, 5),
            Fault::CorruptCache => (1, 10),
            Fault::Partition => (1, 10),
            Fault::RegistryDown => (1, 10),
            Fault::DiskFull => (1, 10),
            Fault::ServerDown => (1, 1),
            // alternately forward then back first: the smoke run steps each way once
            Fault::ClockStep => (2, 10),
        }
    }
}

/// What one injection did and what the checker found after it.
struct Outcome {
    fault: Fault,
    detail: String,
    converged: Option<Duration>,
    violations: Vec<String>,
}

/// The fleet, the workloads and the writes the API acknowledged.
struct Harness {
    f: Fleet,
    /// The DaemonSet's registry, through a proxy that can refuse (down) or flap.
    reg: TcpProxy,
    rng: StdRng,
    rt: tokio::runtime::Runtime,
    /// busybox:v1 or v2: the DaemonSet's image now.
    ds_tag: &'static str,
    /// Names of the ConfigMaps whose create the API answered 2xx.
    acked: Vec<String>,
    writes: usize,
    seed: u64,
    /// Clock steps done (even: the next one steps forward first).
    clock_steps: usize,
}

fn workloads(ds_image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: fds, namespace: default}}
spec:
  selector: {{matchLabels: {{app: fds}}}}
  updateStrategy: {{type: RollingUpdate, rollingUpdate: {{maxUnavailable: 1}}}}
  template:
    metadata: {{labels: {{app: fds}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: c
        image: {ds}
        command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: frs, namespace: default}}
spec:
  replicas: {RS_REPLICAS}
  selector: {{matchLabels: {{app: frs}}}}
  template:
    metadata: {{labels: {{app: frs}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: c
        image: {reg}/busybox:latest
        command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
"#,
        ds = ds_image,
        reg = common::registry(),
    )
}

/// One container of containerd, with what its labels say.
struct Ctr {
    id: String,
    pod_uid: String,
    name: String,
    snapshot_key: String,
}

/// What containerd holds in one node's namespace.
#[derive(Default)]
struct Observed {
    containers: Vec<Ctr>,
    /// task id -> (status (containerd.v1.types.Status), pid)
    tasks: HashMap<String, (i32, u32)>,
    active_snapshots: Vec<String>,
    leases: Vec<String>,
    ingests: Vec<String>,
    /// (name, target digest)
    images: Vec<(String, String)>,
    /// digest -> the digests its gc.ref.content labels name
    content: BTreeMap<String, Vec<String>>,
}

impl Observed {
    fn running(&self, id: &str) -> bool {
        self.tasks
            .get(id)
            .is_some_and(|t| t.0 == containerd_client::types::v1::Status::Running as i32)
    }
}

async fn observe(socket: &std::path::Path, ns: &str) -> Result<Observed, String> {
    use futures::StreamExt as _;
    let e = |what: &str, s: tonic::Status| format!("containerd {what}: {}", s.message());
    let c = Ctd::connect(socket, ns)
        .await
        .map_err(|err| format!("containerd connect: {err}"))?;
    let mut o = Observed::default();
    let containers = c
        .containers()
        .list(c.req(ListContainersRequest { filters: vec![] }))
        .await
        .map_err(|s| e("containers", s))?
        .into_inner()
        .containers;
    for ct in containers {
        let label = |k: &str| ct.labels.get(k).cloned().unwrap_or_default();
        o.containers.push(Ctr {
            pod_uid: label(labels::POD_UID),
            name: label(labels::CONTAINER_NAME),
            snapshot_key: ct.snapshot_key.clone(),
            id: ct.id,
        });
    }
    let tasks = c
        .tasks()
        .list(c.req(ListTasksRequest::default()))
        .await
        .map_err(|s| e("tasks", s))?
        .into_inner()
        .tasks;
    o.tasks = tasks
        .into_iter()
        .map(|t| (t.id, (t.status, t.pid)))
        .collect();
    let mut snaps = c
        .snapshots()
        .list(c.req(ListSnapshotsRequest {
            snapshotter: SNAPSHOTTER.into(),
            filters: vec![],
        }))
        .await
        .map_err(|s| e("snapshots", s))?
        .into_inner();
    while let Some(chunk) = snaps.next().await {
        for i in chunk.map_err(|s| e("snapshots", s))?.info {
            if i.kind == containerd_client::services::v1::snapshots::Kind::Active as i32 {
                o.active_snapshots.push(i.name);
            }
        }
    }
    o.leases = c
        .leases()
        .list(c.req(ListLeasesRequest { filters: vec![] }))
        .await
        .map_err(|s| e("leases", s))?
        .into_inner()
        .leases
        .into_iter()
        .map(|l| l.id)
        .collect();
    o.ingests = c
        .content()
        .list_statuses(c.req(ListStatusesRequest { filters: vec![] }))
        .await
        .map_err(|s| e("ingests", s))?
        .into_inner()
        .statuses
        .into_iter()
        .map(|s| s.r#ref)
        .collect();
    o.images = c
        .images()
        .list(c.req(ListImagesRequest { filters: vec![] }))
        .await
        .map_err(|s| e("images", s))?
        .into_inner()
        .images
        .into_iter()
        .map(|i| (i.name, i.target.map(|t| t.digest).unwrap_or_default()))
        .collect();
    let mut content = c
        .content()
        .list(c.req(ListContentRequest { filters: vec![] }))
        .await
        .map_err(|s| e("content", s))?
        .into_inner();
    while let Some(chunk) = content.next().await {
        for i in chunk.map_err(|s| e("content", s))?.info {
            let refs = i
                .labels
                .iter()
                .filter(|(k, _)| k.starts_with("containerd.io/gc.ref.content"))
                .map(|(_, v)| v.clone())
                .collect();
            o.content.insert(i.digest, refs);
        }
    }
    Ok(o)
}

/// The ids runc keeps state of in namespace `ns` (containers it created and did not delete).
fn runc_ids(ns: &str) -> Vec<String> {
    let root = format!("/run/containerd/runc/{ns}");
    std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

/// The `-id` of every shim running for namespace `ns`, with its pid.
fn shims(ns: &str) -> Vec<(i32, String)> {
    let needle = format!("-namespace {ns} ");
    common::pids_with(&["containerd-shim", &needle])
        .into_iter()
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect();
            let at = args.iter().position(|a| a == "-id")?;
            Some((pid, args.get(at + 1)?.clone()))
        })
        .collect()
}

/// Mount points under `dir`.
fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

impl Harness {
    fn start(seed: u64) -> Harness {
        let f = Fleet::start(FleetOptions {
            agents: 3,
            server_args: vec!["--node-monitor-grace-period".into(), GRACE.into()],
            agent_config: format!("node-lease-duration-seconds = {LEASE_SECONDS}\n"),
            state_tmpfs_mib: Some(STATE_MIB),
            faketime: vec![CLOCK_NODE],
        });
        let reg = TcpProxy::start(common::registry().parse().unwrap());
        f.apply(&workloads(&format!("{}/busybox:v1", reg.addr)));
        Harness {
            f,
            reg,
            rng: StdRng::seed_from_u64(seed),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            ds_tag: "v1",
            acked: vec![],
            writes: 0,
            seed,
            clock_steps: 0,
        }
    }

    /// Every invariant that does not hold now, one line each.
    fn violations(&self) -> Vec<String> {
        let mut v = vec![];
        let f = &self.f;
        let get = |path: &str| f.get_json(path);
        let (Some(nodes), Some(pods), Some(ds), Some(rs)) = (
            get("/api/v1/nodes"),
            get("/api/v1/namespaces/default/pods"),
            get("/apis/apps/v1/namespaces/default/daemonsets/fds"),
            get("/apis/apps/v1/namespaces/default/replicasets/frs"),
        ) else {
            return vec!["the API does not answer".into()];
        };
        let pods = items(&pods);
        for n in &f.nodes {
            let node = items(&nodes)
                .into_iter()
                .find(|x| x["metadata"]["name"] == n.name.as_str());
            match node {
                None => v.push(format!("node {}: no Node", n.name)),
                Some(node) if node_condition(&node, "Ready") != Some("True") => {
                    v.push(format!("node {}: not Ready", n.name))
                }
                Some(_) => {}
            }
        }
        // the wanted pods: bound, not terminating
        let mut wanted: HashMap<String, (String, Value)> = HashMap::new();
        for p in &pods {
            let name = s(&p["metadata"]["name"]).to_string();
            if !p["metadata"]["deletionTimestamp"].is_null() {
                v.push(format!("pod {name}: still terminating"));
                continue;
            }
            let node = s(&p["spec"]["nodeName"]).to_string();
            if node.is_empty() {
                v.push(format!("pod {name}: not bound"));
                continue;
            }
            wanted.insert(s(&p["metadata"]["uid"]).to_string(), (node, p.clone()));
        }
        // the DaemonSet: one updated, ready pod per node, and a status that says so
        let n = f.nodes.len() as i64;
        let ds_pods: Vec<&(String, Value)> = wanted
            .values()
            .filter(|(_, p)| p["metadata"]["labels"]["app"] == "fds")
            .collect();
        for node in &f.nodes {
            let on: Vec<_> = ds_pods.iter().filter(|(x, _)| *x == node.name).collect();
            if on.len() != 1 {
                v.push(format!("daemonset: {} pods on {}", on.len(), node.name));
            }
        }
        let want_image = self.image(self.ds_tag);
        for (_, p) in &ds_pods {
            let img = s(&p["spec"]["containers"][0]["image"]);
            if img != want_image {
                v.push(format!(
                    "daemonset pod {}: image {img}, the template has {want_image}",
                    s(&p["metadata"]["name"])
                ));
            }
        }
        let st = &ds["status"];
        for (field, want) in [
            ("desiredNumberScheduled", n),
            ("currentNumberScheduled", n),
            ("updatedNumberScheduled", n),
            ("numberReady", n),
            ("numberAvailable", n),
            ("numberMisscheduled", 0),
        ] {
            let got = st[field].as_i64().unwrap_or(0);
            if got != want {
                v.push(format!("daemonset status: {field} {got}, want {want}"));
            }
        }
        if st["observedGeneration"] != ds["metadata"]["generation"] {
            v.push("daemonset status: observedGeneration behind".into());
        }
        // the ReplicaSet
        let rs_pods = wanted
            .values()
            .filter(|(_, p)| p["metadata"]["labels"]["app"] == "frs")
            .count();
        if rs_pods != RS_REPLICAS {
            v.push(format!("replicaset: {rs_pods} pods, want {RS_REPLICAS}"));
        }
        let ready = rs["status"]["readyReplicas"].as_i64().unwrap_or(0);
        if ready != RS_REPLICAS as i64 {
            v.push(format!("replicaset status: readyReplicas {ready}"));
        }

        // containerd, runc, the shims and the state directory of each node, against the pods
        let mut all_observed = 0usize;
        for node in &f.nodes {
            let o = match self.rt.block_on(observe(&node.ctd.socket, &node.namespace)) {
                Ok(o) => o,
                Err(e) => {
                    v.push(format!("node {}: {e}", node.name));
                    continue;
                }
            };
            let here: HashMap<&String, &Value> = wanted
                .iter()
                .filter(|(_, (x, _))| *x == node.name)
                .map(|(uid, (_, p))| (uid, p))
                .collect();
            all_observed += here.len();
            let nn = &node.name;
            for c in &o.containers {
                if !here.contains_key(&c.pod_uid) {
                    v.push(format!(
                        "node {nn}: container {} of pod uid {} that no controller wants",
                        c.id, c.pod_uid
                    ));
                }
            }
            for (uid, p) in &here {
                let pname = s(&p["metadata"]["name"]);
                if s(&p["status"]["phase"]) != "Running" {
                    v.push(format!("pod {pname}: phase {}", p["status"]["phase"]));
                }
                for spec in p["spec"]["containers"].as_array().into_iter().flatten() {
                    let cname = s(&spec["name"]);
                    let mine: Vec<&Ctr> = o
                        .containers
                        .iter()
                        .filter(|c| c.pod_uid == **uid && c.name == cname)
                        .collect();
                    let running: Vec<&&Ctr> = mine.iter().filter(|c| o.running(&c.id)).collect();
                    if running.len() != 1 {
                        v.push(format!(
                            "pod {pname} container {cname}: {} running tasks on {nn}",
                            running.len()
                        ));
                    }
                    if mine.len() > 2 {
                        v.push(format!(
                            "pod {pname} container {cname}: {} containers kept on {nn}",
                            mine.len()
                        ));
                    }
                    let status = p["status"]["containerStatuses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|cs| cs["name"] == cname);
                    match (status, running.first()) {
                        (None, _) => v.push(format!("pod {pname} container {cname}: no status")),
                        (Some(cs), Some(r)) => {
                            let id = format!("containerd://{}", r.id);
                            if cs["containerID"] != id.as_str()
                                || cs["ready"] != true
                                || cs["state"]["running"].is_null()
                            {
                                v.push(format!(
                                    "pod {pname} container {cname}: the API says {} ready {} running {}, containerd runs {}",
                                    cs["containerID"], cs["ready"], !cs["state"]["running"].is_null(), r.id
                                ));
                            }
                        }
                        (Some(_), None) => {}
                    }
                }
            }
            let ids: BTreeSet<&str> = o.containers.iter().map(|c| c.id.as_str()).collect();
            for id in runc_ids(&node.namespace) {
                if !ids.contains(id.as_str()) {
                    v.push(format!(
                        "node {nn}: runc state of {id}, which containerd does not have"
                    ));
                }
            }
            for (pid, id) in shims(&node.namespace) {
                if !o.running(&id) {
                    v.push(format!("node {nn}: shim {pid} of {id}, which runs no task"));
                }
            }
            let keys: BTreeSet<&str> = o
                .containers
                .iter()
                .map(|c| c.snapshot_key.as_str())
                .collect();
            for a in &o.active_snapshots {
                if !keys.contains(a.as_str()) {
                    v.push(format!(
                        "node {nn}: active snapshot {a} without a container"
                    ));
                }
            }
            for l in &o.leases {
                v.push(format!("node {nn}: lease {l} left"));
            }
            for i in &o.ingests {
                v.push(format!("node {nn}: unfinished ingest {i}"));
            }
            let mut reached = BTreeSet::new();
            let mut todo: Vec<String> = vec![];
            for (name, target) in &o.images {
                if !o.content.contains_key(target) {
                    v.push(format!(
                        "node {nn}: image {name} without its content {target}"
                    ));
                }
                todo.push(target.clone());
            }
            while let Some(d) = todo.pop() {
                if reached.insert(d.clone()) {
                    todo.extend(o.content.get(&d).cloned().unwrap_or_default());
                }
            }
            for d in o.content.keys() {
                if !reached.contains(d) {
                    v.push(format!("node {nn}: content {d} that no image reaches"));
                }
            }
            // the agent's own leftovers: mounts (network and IPC namespaces), sandbox records
            let uid_wanted = |text: &str| here.keys().any(|u| text.contains(u.as_str()));
            for m in mounts_under(&node.state_dir) {
                if !uid_wanted(&m) {
                    v.push(format!("node {nn}: mount {m} of a pod that is gone"));
                }
            }
            for r in names_in(&node.state_dir.join("sandboxes")) {
                if !uid_wanted(&r) {
                    v.push(format!(
                        "node {nn}: sandbox record {r} of a pod that is gone"
                    ));
                }
            }
            for d in names_in(&node.state_dir.join("netns")) {
                if !uid_wanted(&d) {
                    v.push(format!(
                        "node {nn}: network namespace {d} of a pod that is gone"
                    ));
                }
            }
        }
        // the network: one reservation and one veth per wanted pod
        let reservations = f.net.reservations();
        let mut per_uid: HashMap<&str, usize> = HashMap::new();
        for (ip, id) in &reservations {
            *per_uid.entry(id.as_str()).or_default() += 1;
            if !wanted.contains_key(id) {
                v.push(format!(
                    "address {ip} reserved for {id}, a pod that is gone"
                ));
            }
        }
        for uid in wanted.keys() {
            let k = per_uid.get(uid.as_str()).copied().unwrap_or(0);
            if k != 1 {
                v.push(format!("pod uid {uid}: {k} address reservations"));
            }
        }
        let veths = f.net.veths().len();
        if veths != all_observed {
            v.push(format!(
                "{veths} veths on the bridge for {all_observed} pods"
            ));
        }
        // every acknowledged write is there (a list of them all: only once the rest holds)
        if v.is_empty() && !self.acked.is_empty() {
            match get("/api/v1/namespaces/default/configmaps") {
                None => v.push("the API does not list ConfigMaps".into()),
                Some(cms) => {
                    let have: BTreeSet<String> = items(&cms)
                        .iter()
                        .map(|c| s(&c["metadata"]["name"]).to_string())
                        .collect();
                    let lost: Vec<&String> =
                        self.acked.iter().filter(|a| !have.contains(*a)).collect();
                    if !lost.is_empty() {
                        v.push(format!(
                            "{} acknowledged ConfigMaps lost, e.g. {:?}",
                            lost.len(),
                            &lost[..lost.len().min(5)]
                        ));
                    }
                }
            }
        }
        v
    }

    /// The checker's own test: a leak of each kind planted by hand on node n0 (a lease, a
    /// container no pod wants, runc state, a sandbox record, an address reservation) is each
    /// reported; removed again, the fleet converges.
    fn checker_sees_planted_leaks(&self) {
        let n = &self.f.nodes[0];
        let (socket, ns) = (n.ctd.socket.clone(), n.namespace.clone());
        let lease = self.rt.block_on(async {
            let c = Ctd::connect(&socket, &ns).await.unwrap();
            c.create_lease("planted", 1).await.unwrap()
        });
        let ctr = |args: &[&str]| {
            let out = std::process::Command::new("ctr")
                .arg("--address")
                .arg(&socket)
                .args(["-n", &ns])
                .args(args)
                .output()
                .expect("run ctr");
            assert!(
                out.status.success(),
                "ctr {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let image = self.image(self.ds_tag);
        ctr(&[
            "containers",
            "create",
            "--label",
            &format!("{}=planted-uid", labels::POD_UID),
            &image,
            "planted-ctr",
        ]);
        let runc = std::path::PathBuf::from(format!("/run/containerd/runc/{ns}/planted-runc"));
        std::fs::create_dir_all(&runc).unwrap();
        let record = n.state_dir.join("sandboxes/planted-uid.json");
        std::fs::write(&record, b"{}").unwrap();
        std::fs::create_dir_all(&self.f.net.ipam_dir).unwrap();
        let reservation = self.f.net.ipam_dir.join("10.255.255.254");
        std::fs::write(&reservation, b"planted-uid\neth0").unwrap();

        let v = self.violations();
        for (what, needle) in [
            ("the lease", lease.as_str()),
            ("the container", "container planted-ctr"),
            ("the runc state", "runc state of planted-runc"),
            ("the sandbox record", "sandbox record planted-uid.json"),
            ("the reservation", "reserved for planted-uid"),
        ] {
            assert!(
                v.iter().any(|x| x.contains(needle)),
                "the checker missed {what}: {v:#?}"
            );
        }
        self.rt.block_on(async {
            let c = Ctd::connect(&socket, &ns).await.unwrap();
            c.delete_lease(&lease).await;
        });
        ctr(&["containers", "delete", "planted-ctr"]);
        std::fs::remove_dir(&runc).unwrap();
        std::fs::remove_file(&record).unwrap();
        std::fs::remove_file(&reservation).unwrap();
    }

    /// Every node's Lease is renewed again after the fault: its renewTime changes within two
    /// renewal periods (a quarter of [`LEASE_SECONDS`] each) plus slack. A Node can look Ready
    /// without it (its agent re-posts Ready whenever the controller marks it Unknown), so this is
    /// checked on its own (a stale watch cache made every renewal a 409 after a partition).
    fn leases_renewed(&self) -> Vec<String> {
        let renew_time = |name: &str| {
            let path =
                format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}");
            self.f
                .get_json(&path)
                .map(|l| s(&l["spec"]["renewTime"]).to_string())
        };
        let before: Vec<(String, Option<String>)> = self
            .f
            .nodes
            .iter()
            .map(|n| (n.name.clone(), renew_time(&n.name)))
            .collect();
        let within = Duration::from_secs(u64::from(LEASE_SECONDS) / 2 + 5);
        before
            .into_iter()
            .filter_map(|(name, was)| {
                let renewed = common::wait_for_opt(within, || {
                    let now = renew_time(&name)?;
                    (Some(&now) != was.as_ref()).then_some(())
                });
                renewed.is_none().then(|| {
                    format!("node {name}'s Lease not renewed within {within:?} after the fault (renewTime {was:?})")
                })
            })
            .collect()
    }

    /// Waits until every invariant holds: the time it took, or the violations at the deadline.
    fn converge(&self) -> (Option<Duration>, Vec<String>) {
        let t0 = Instant::now();
        loop {
            let v = self.violations();
            if v.is_empty() {
                return (Some(t0.elapsed()), v);
            }
            if t0.elapsed() > CONVERGE {
                return (None, v);
            }
            // a poll interval, not a synchronisation: the check itself is the condition
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn image(&self, tag: &str) -> String {
        format!("{}/busybox:{tag}", self.reg.addr)
    }

    fn pause(&mut self, max_ms: u64) -> u64 {
        let ms = self.rng.random_range(0..=max_ms);
        // fault timing (the random point the fault lands at), not a synchronisation
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }

    fn node(&mut self) -> usize {
        self.rng.random_range(0..self.f.nodes.len())
    }

    /// Kills (-9) the main process of a random running container of node `i` and waits until
    /// its agent runs it again (a new process for the same pod and container).
    fn crash_container(&mut self, i: usize) -> (String, bool) {
        let n = &self.f.nodes[i];
        let (socket, ns) = (n.ctd.socket.clone(), n.namespace.clone());
        let o = self.rt.block_on(observe(&socket, &ns)).unwrap();
        let running: Vec<&Ctr> = o.containers.iter().filter(|c| o.running(&c.id)).collect();
        assert!(!running.is_empty(), "n{i} runs no container");
        let victim = running[self.rng.random_range(0..running.len())];
        let (uid, name) = (victim.pod_uid.clone(), victim.name.clone());
        let pid = o.tasks[&victim.id].1;
        // SAFETY: kill(2) with plain integers
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let again = common::wait_for_opt(Duration::from_secs(60), || {
            let o = self.rt.block_on(observe(&socket, &ns)).ok()?;
            o.containers
                .iter()
                .find(|c| {
                    c.pod_uid == uid
                        && c.name == name
                        && o.running(&c.id)
                        && o.tasks[&c.id].1 != pid
                })
                .map(|_| ())
        });
        (
            format!("container {} (pid {pid}) crashed", victim.id),
            again.is_some(),
        )
    }

    /// Waits until node `i` is no longer Ready (its agent silent past the grace period).
    fn wait_unready(&self, i: usize) -> Duration {
        let name = self.f.nodes[i].name.clone();
        let t0 = Instant::now();
        common::wait_for(
            &format!("node {name} to leave Ready while its agent is silent"),
            Duration::from_secs(90),
            || {
                let node = self.f.get_json(&format!("/api/v1/nodes/{name}"))?;
                (node_condition(&node, "Ready") != Some("True")).then_some(())
            },
        );
        t0.elapsed()
    }

    /// The ids of the containers running on node `i`.
    fn running_ids(&self, i: usize) -> BTreeSet<String> {
        self.running_ids_but(i, None)
    }

    /// The ids of the containers running on node `i`, but pod `uid`'s.
    fn running_ids_but(&self, i: usize, uid: Option<&str>) -> BTreeSet<String> {
        let n = &self.f.nodes[i];
        let o = self
            .rt
            .block_on(observe(&n.ctd.socket, &n.namespace))
            .unwrap_or_default();
        o.containers
            .iter()
            .filter(|c| o.running(&c.id) && uid != Some(c.pod_uid.as_str()))
            .map(|c| c.id.clone())
            .collect()
    }

    /// A pod on node `i` whose container exits 1 a second after each start, once it restarted
    /// once (so it is in its restart back-off): (name, uid).
    fn start_crasher(&mut self, i: usize) -> (String, String) {
        let name = format!("clock-crash-{}", self.clock_steps);
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": self.f.nodes[i].name, "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": self.image(self.ds_tag),
                    "command": ["sh", "-c", "sleep 1; exit 1"]}]}});
        let (code, body) = self.f.endpoint().send(
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            &pod.to_string(),
        );
        assert_eq!(code, 201, "create pod {name}: {body}");
        let uid = serde_json::from_str::<Value>(&body).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string();
        common::wait_for(
            &format!("pod {name} to restart once"),
            Duration::from_secs(60),
            || (self.crash_state(&name)?.0 >= 1).then_some(()),
        );
        (name, uid)
    }

    /// Pod `name`'s container: (restart count, the seconds of back-off its waiting message
    /// names, when it waits in CrashLoopBackOff).
    fn crash_state(&self, name: &str) -> Option<(i64, Option<u64>)> {
        let p = self
            .f
            .get_json(&format!("/api/v1/namespaces/default/pods/{name}"))?;
        let c = p["status"]["containerStatuses"].get(0)?;
        let waiting = &c["state"]["waiting"];
        let secs = (waiting["reason"] == "CrashLoopBackOff")
            .then(|| {
                s(&waiting["message"])
                    .strip_prefix("back-off ")?
                    .split('s')
                    .next()?
                    .parse()
                    .ok()
            })
            .flatten();
        Some((c["restartCount"].as_i64()?, secs))
    }

    /// Sets agent `i`'s clock offset to `offset` seconds (a step of `step`) and watches for
    /// [`CLOCK_HOLD`], and until the crasher restarted: the node stays Ready, its Lease keeps
    /// being renewed with renewTimes the step moved, the crasher's back-off is neither zero
    /// (restarts at most one per 10 s, one more for a back-off reset) nor longer than the cap.
    /// Returns what was seen and the violations.
    fn clock_step(
        &mut self,
        i: usize,
        crasher: &(String, String),
        offset: i64,
        step: i64,
    ) -> (String, Vec<String>) {
        let name = self.f.nodes[i].name.clone();
        let lease =
            format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}");
        let (r0, _) = self.crash_state(&crasher.0).unwrap_or((0, None));
        let mut v = vec![];
        let mut renewals: BTreeSet<String> = BTreeSet::new();
        let (mut unready, mut shifted, mut longest, mut restarts) = (0, false, 0u64, 0i64);
        self.f.set_clock(i, offset);
        let t0 = Instant::now();
        // watched for the hold, and on until the crasher restarted (its back-off was at most
        // 20 s at the step), within a deadline that a back-off of an hour would miss
        while t0.elapsed() < CLOCK_HOLD || (restarts == 0 && t0.elapsed() < 2 * CLOCK_HOLD) {
            if let Some(node) = self.f.get_json(&format!("/api/v1/nodes/{name}")) {
                if node_condition(&node, "Ready") != Some("True") {
                    unready += 1;
                }
            }
            if let Some(l) = self.f.get_json(&lease) {
                let renew = s(&l["spec"]["renewTime"]).to_string();
                if let Ok(at) = chrono::DateTime::parse_from_rfc3339(&renew) {
                    // the agent stamps renewTime with its own (stepped) clock
                    let skew = at.timestamp() - chrono::Utc::now().timestamp();
                    if offset == 0 || (skew - offset).abs() < 60 {
                        shifted = true;
                    }
                }
                renewals.insert(renew);
            }
            if let Some((r, secs)) = self.crash_state(&crasher.0) {
                restarts = r - r0;
                longest = longest.max(secs.unwrap_or(0));
            }
            // a poll interval, not a synchronisation: each poll is an observation
            std::thread::sleep(Duration::from_millis(500));
        }
        let held = t0.elapsed();
        if unready > 0 {
            v.push(format!(
                "node {name} left Ready after a {step:+} s clock step ({unready} polls)"
            ));
        }
        if renewals.len() < 3 {
            v.push(format!(
                "node {name}'s Lease was renewed {} times in {held:?} after a {step:+} s step",
                renewals.len()
            ));
        }
        if !shifted {
            v.push(format!(
                "the agent of {name} does not see its clock at {offset:+} s (libfaketime): renewTimes {renewals:?}"
            ));
        }
        if restarts == 0 {
            v.push(format!(
                "pod {} never restarted in {held:?} after a {step:+} s step (back-off stuck; longest said {longest} s)",
                crasher.0
            ));
        }
        let most = held.as_secs() as i64 / 10 + 2;
        if restarts > most {
            v.push(format!(
                "pod {} restarted {restarts} times in {held:?} after a {step:+} s step: its back-off collapsed (at most {most})",
                crasher.0
            ));
        }
        if longest > BACKOFF_MAX_S {
            v.push(format!(
                "pod {}'s back-off is {longest} s after a {step:+} s step (cap {BACKOFF_MAX_S} s)",
                crasher.0
            ));
        }
        (
            format!(
                "{step:+} s: {} renewals, crasher restarted {restarts}x, longest back-off {longest} s",
                renewals.len()
            ),
            v,
        )
    }

    /// Deletes pod `name` and waits until it is gone.
    fn delete_pod(&self, name: &str) {
        let path = format!("/api/v1/namespaces/default/pods/{name}");
        let (code, body) = self
            .f
            .endpoint()
            .send("DELETE", &path, "application/json", "{}");
        assert!(
            code == 200 || code == 404,
            "delete pod {name}: {code} {body}"
        );
        common::wait_for(
            &format!("pod {name} to be gone"),
            Duration::from_secs(60),
            || (self.f.endpoint().try_get(&path).ok()?.0 == 404).then_some(()),
        );
    }

    /// Rolls the DaemonSet to the other image.
    fn flip_image(&mut self) {
        self.ds_tag = if self.ds_tag == "v1" { "v2" } else { "v1" };
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": self.image(self.ds_tag)}]}}}});
        let (code, body) = self.f.endpoint().send(
            "PATCH",
            "/apis/apps/v1/namespaces/default/daemonsets/fds",
            "application/strategic-merge-patch+json",
            &patch.to_string(),
        );
        assert_eq!(code, 200, "patch the DaemonSet's image: {body}");
    }

    /// Removes the image the DaemonSet rolls to next from node `i`'s containerd, so the next
    /// rollout pulls it there.
    fn forget_next_image(&mut self, i: usize) {
        let next = if self.ds_tag == "v1" { "v2" } else { "v1" };
        let node = &self.f.nodes[i];
        let (socket, ns) = (node.ctd.socket.clone(), node.namespace.clone());
        self.rt.block_on(async move {
            let c = Ctd::connect(&socket, &ns).await.unwrap();
            let images = c
                .images()
                .list(c.req(ListImagesRequest { filters: vec![] }))
                .await
                .unwrap()
                .into_inner()
                .images;
            for img in images
                .into_iter()
                .filter(|i| i.name.ends_with(&format!("/busybox:{next}")))
            {
                let _ = c
                    .images()
                    .delete(c.req(DeleteImageRequest {
                        name: img.name,
                        sync: true,
                        target: None,
                    }))
                    .await;
            }
        });
    }

    /// Starts a rollout whose image node `i` must pull, and holds that pull in flight: the
    /// registry blackholed (connections accepted, no byte answered) until the caller sets it to
    /// pass again, so a fault injected meanwhile lands mid-pull (a local pull of busybox takes
    /// a few ms: random timing alone would almost never hit it).
    fn start_pull(&mut self, i: usize) {
        self.forget_next_image(i);
        self.reg.set(Mode::Blackhole);
        self.flip_image();
    }

    /// Deletes one pod bound to node `i` (its controller makes another: its agent stops one and
    /// starts one).
    fn delete_pod_on(&mut self, i: usize) -> String {
        let node = self.f.nodes[i].name.clone();
        let pods = self
            .f
            .get_json(&format!(
                "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName={node}"
            ))
            .map(|p| items(&p))
            .unwrap_or_default();
        if pods.is_empty() {
            return "no pod to delete".into();
        }
        let p = &pods[self.rng.random_range(0..pods.len())];
        let name = s(&p["metadata"]["name"]).to_string();
        let (code, body) = self.f.endpoint().send(
            "DELETE",
            &format!("/api/v1/namespaces/default/pods/{name}"),
            "application/json",
            "{}",
        );
        assert!(
            code == 200 || code == 404,
            "delete pod {name}: {code} {body}"
        );
        format!("pod {name} deleted")
    }

    /// What to do to the fleet just before a process dies: nothing, a pod deleted on node `i`
    /// (a reconcile: a stop and a start), a rollout whose image node `i` must pull, or a rollout.
    fn disturb(&mut self, i: usize) -> String {
        match self.rng.random_range(0..4) {
            0 => "idle".into(),
            1 => format!("reconcile ({})", self.delete_pod_on(i)),
            2 => {
                self.start_pull(i);
                format!("pull of busybox:{}", self.ds_tag)
            }
            _ => {
                self.flip_image();
                format!("rollout to busybox:{}", self.ds_tag)
            }
        }
    }

    fn inject(&mut self, fault: Fault) -> Outcome {
        let mut extra = vec![];
        // (node, its running containers before): an idle fault must restart none of them
        let mut after_check: Option<(usize, BTreeSet<String>)> = None;
        // (node, label value) a relabel while the server was down must bring to the API
        let mut relabel: Option<(usize, String)> = None;
        let detail = match fault {
            Fault::AgentKill => {
                let i = self.node();
                let during = self.disturb(i);
                let at = self.pause(2000);
                self.f.kill_agent(i);
                let down = self.pause(1000);
                self.f.start_agent(i);
                self.reg.set(Mode::Pass);
                format!("n{i} during {during}, {at} ms in, down {down} ms")
            }
            Fault::AgentStop => {
                let i = self.node();
                let before = self.running_ids(i);
                self.f.signal_agent(i, libc::SIGSTOP);
                let unready = self.wait_unready(i);
                let idle = self.rng.random_bool(0.5);
                let during = if idle {
                    "idle".to_string()
                } else {
                    self.flip_image();
                    format!("rollout to busybox:{} while stopped", self.ds_tag)
                };
                self.pause(3000);
                self.f.signal_agent(i, libc::SIGCONT);
                if idle {
                    after_check = Some((i, before));
                }
                format!(
                    "n{i} stopped {} ms until NotReady, {during}",
                    unready.as_millis()
                )
            }
            Fault::ContainerdKill => {
                let i = self.node();
                let during = match self.rng.random_range(0..3) {
                    0 => "idle".to_string(),
                    1 => format!("start ({})", self.delete_pod_on(i)),
                    _ => {
                        self.start_pull(i);
                        format!("pull of busybox:{}", self.ds_tag)
                    }
                };
                let at = self.pause(2000);
                self.f.nodes[i].ctd.crash();
                // a pull held in flight goes on now, against a containerd that is down
                self.reg.set(Mode::Pass);
                let down = 300 + self.pause(700);
                self.f.nodes[i].ctd.respawn();
                format!("n{i} during {during}, {at} ms in, down {down} ms")
            }
            Fault::ShimKill => {
                let i = self.node();
                let ns = self.f.nodes[i].namespace.clone();
                let shims = shims(&ns);
                assert!(!shims.is_empty(), "node n{i} runs no shim to kill");
                let (pid, id) = shims[self.rng.random_range(0..shims.len())].clone();
                // SAFETY: kill(2) with plain integers
                unsafe { libc::kill(pid, libc::SIGKILL) };
                format!("n{i} shim {pid} of {id}")
            }
            Fault::ServerKillWrites => {
                let (n, k) = self.server_kill_during_writes();
                format!("kill -9 after {k} of {n} acknowledged writes")
            }
            Fault::CorruptCache => {
                let i = self.node();
                self.f.kill_agent(i);
                let path = self.f.nodes[i].state_dir.join("desired.json");
                let bytes = std::fs::read(&path).unwrap_or_default();
                let how = match self.rng.random_range(0..3) {
                    0 => {
                        let len = self.rng.random_range(0..bytes.len().max(1));
                        std::fs::write(&path, &bytes[..len]).unwrap();
                        format!("truncated to {len} of {} bytes", bytes.len())
                    }
                    1 => {
                        std::fs::write(&path, b"").unwrap();
                        "emptied".to_string()
                    }
                    _ => {
                        let mut b = bytes.clone();
                        for _ in 0..8 {
                            if !b.is_empty() {
                                let at = self.rng.random_range(0..b.len());
                                b[at] = self.rng.random();
                            }
                        }
                        std::fs::write(&path, &b).unwrap();
                        "8 random bytes overwritten".to_string()
                    }
                };
                self.f.start_agent(i);
                let log = self.f.nodes[i].agent.as_ref().unwrap().log_path.clone();
                // bytes that still parse (a changed letter inside a string) are a cache the
                // agent cannot tell from a good one: only unreadable ones must be discarded
                let readable =
                    serde_json::from_slice::<Value>(&std::fs::read(&path).unwrap()).is_ok();
                let said = common::wait_for_opt(Duration::from_secs(30), || {
                    let text = std::fs::read_to_string(&log).ok()?;
                    text.contains("unreadable desired-state cache")
                        .then_some(())
                });
                if said.is_none() && !readable {
                    extra.push(format!(
                        "n{i}: the agent did not say it discarded its cache ({how})"
                    ));
                }
                format!("n{i} cache {how}")
            }
            Fault::Partition => {
                let i = self.node();
                let before = self.running_ids(i);
                self.f.api_link(i).set(Mode::Blackhole);
                let unready = self.wait_unready(i);
                let idle = self.rng.random_bool(0.5);
                let during = if idle {
                    "idle".to_string()
                } else {
                    self.flip_image();
                    format!("rollout to busybox:{}", self.ds_tag)
                };
                self.pause(3000);
                self.f.api_link(i).set(Mode::Pass);
                if idle {
                    after_check = Some((i, before));
                }
                format!(
                    "n{i} cut off {} ms until NotReady, {during}",
                    unready.as_millis()
                )
            }
            Fault::RegistryDown => {
                // every node must pull the next image, from a registry that is down or flapping
                for i in 0..self.f.nodes.len() {
                    self.forget_next_image(i);
                }
                let flap = self.rng.random_bool(0.5);
                self.reg.set(Mode::Refuse);
                self.flip_image();
                let outage = self.rng.random_range(2000..8000u64);
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_millis(outage) {
                    // the flapping itself: up and down at random, for a bounded time
                    let (mode, ms) = if flap {
                        let up = self.rng.random_bool(0.5);
                        (
                            if up { Mode::Pass } else { Mode::Refuse },
                            self.rng.random_range(50..500),
                        )
                    } else {
                        (Mode::Refuse, 100)
                    };
                    self.reg.set(mode);
                    std::thread::sleep(Duration::from_millis(ms));
                }
                self.reg.set(Mode::Pass);
                format!(
                    "{} for {outage} ms during the rollout to busybox:{}",
                    if flap { "flapping" } else { "down" },
                    self.ds_tag
                )
            }
            Fault::DiskFull => {
                let i = self.node();
                let fill = self.f.nodes[i].state_dir.join("fill");
                let filled = fill_up(&fill);
                let during = if self.rng.random_bool(0.5) {
                    self.delete_pod_on(i)
                } else {
                    self.flip_image();
                    format!("rollout to busybox:{}", self.ds_tag)
                };
                self.pause(3000);
                std::fs::remove_file(&fill).unwrap();
                format!("n{i} full ({filled} bytes written to fill it), {during}")
            }
            Fault::ClockStep => {
                let i = CLOCK_NODE;
                let first = if self.clock_steps.is_multiple_of(2) {
                    CLOCK_STEP_S
                } else {
                    -CLOCK_STEP_S
                };
                self.clock_steps += 1;
                let crasher = self.start_crasher(i);
                let before = self.running_ids_but(i, Some(&crasher.1));
                let (a, mut v) = self.clock_step(i, &crasher, first, first);
                let (b, v2) = self.clock_step(i, &crasher, 0, -first);
                v.extend(v2);
                extra.extend(v);
                self.delete_pod(&crasher.0);
                after_check = Some((i, before));
                format!("n{i} wall clock {first:+} s ({a}), then back ({b})")
            }
            Fault::ServerDown => {
                self.f.kill_server();
                let i = self.node();
                let (crashed, restarted) = self.crash_container(i);
                if !restarted {
                    extra.push(format!(
                        "n{i}: {crashed}, and its agent did not restart it within 60 s without the API"
                    ));
                }
                let round = self.rng.random::<u32>().to_string();
                let config = &self.f.nodes[i].config;
                let mut text = std::fs::read_to_string(config).unwrap();
                if let Some(at) = text.find("[node-labels]") {
                    text.truncate(at);
                }
                text.push_str(&format!(
                    "[node-labels]\n\"faults.test/round\" = \"{round}\"\n"
                ));
                std::fs::write(config, text).unwrap();
                self.f.signal_agent(i, libc::SIGHUP);
                let down = if full() { 300 } else { 5 };
                // the outage itself: how long the server stays down
                std::thread::sleep(Duration::from_secs(down));
                self.f.start_server();
                relabel = Some((i, round));
                format!("{down} s; on n{i} {crashed} and the node relabelled")
            }
        };
        let (converged, mut violations) = self.converge();
        violations.extend(self.leases_renewed());
        if let Some((i, round)) = relabel {
            let name = self.f.nodes[i].name.clone();
            let labelled = common::wait_for_opt(Duration::from_secs(30), || {
                let node = self.f.get_json(&format!("/api/v1/nodes/{name}"))?;
                (node["metadata"]["labels"]["faults.test/round"] == round.as_str()).then_some(())
            });
            if labelled.is_none() {
                let log = self.f.nodes[i]
                    .agent
                    .as_ref()
                    .map(|a| a.log())
                    .unwrap_or_default();
                let said: Vec<&str> = log
                    .lines()
                    .filter(|l| {
                        l.contains("WARN")
                            || l.contains("ERROR")
                            || l.contains("reload")
                            || l.contains("label")
                    })
                    .collect();
                violations.push(format!(
                    "node {name}: the label set while the server was down never reached the API; its agent said:\n{}",
                    said[said.len().saturating_sub(15)..].join("\n")
                ));
            }
        }
        if let Some((i, before)) = after_check {
            let after = self.running_ids(i);
            if after != before {
                violations.push(format!(
                    "n{i}: containers restarted across the fault (before {before:?}, after {after:?})"
                ));
            }
        }
        violations.extend(extra);
        Outcome {
            fault,
            detail,
            converged,
            violations,
        }
    }

    /// A bounded stream of ConfigMap creates, the server killed (-9) once a random number of
    /// them was acknowledged, then started again: returns (stream length, acknowledged).
    fn server_kill_during_writes(&mut self) -> (usize, usize) {
        let n = if full() { 10_000 } else { 200 };
        let kill_at = self.rng.random_range(1..n);
        let round = self.writes;
        self.writes += 1;
        let acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let ep = self.f.endpoint();
        let (acked2, seed) = (acked.clone(), self.seed);
        let writer = std::thread::spawn(move || {
            for k in 0..n {
                let name = format!("ack-{seed:x}-{round}-{k}");
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name}, "data": {"k": k.to_string()}});
                match ep.try_send(
                    "POST",
                    "/api/v1/namespaces/default/configmaps",
                    "application/json",
                    &body.to_string(),
                ) {
                    Ok((code, _)) if (200..300).contains(&code) => {
                        acked2.lock().unwrap().push(name)
                    }
                    // the server died: what was acknowledged is what counts
                    _ => return,
                }
            }
        });
        common::wait_for_opt(Duration::from_secs(120), || {
            (acked.lock().unwrap().len() >= kill_at || writer.is_finished()).then_some(())
        });
        self.f.kill_server();
        writer.join().unwrap();
        self.f.start_server();
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        let k = acked.len();
        self.acked.extend(acked);
        (n, k)
    }
}

/// Writes zeros to `path` until the file system says ENOSPC: the bytes written.
fn fill_up(path: &std::path::Path) -> u64 {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    // bounded by the tmpfs' size: at most STATE_MIB chunks fit
    for _ in 0..=STATE_MIB * 2 {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(
                    e.raw_os_error(),
                    Some(libc::ENOSPC),
                    "fill {}: {e}",
                    path.display()
                );
                break;
            }
        }
    }
    let _ = file.flush();
    written
}

fn full() -> bool {
    std::env::var("DSA_FAULTS").is_ok_and(|v| v == "full")
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[at])
}

#[test]
fn fault_matrix() {
    let seed = std::env::var("DSA_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let only: Option<Vec<String>> = std::env::var("DSA_FAULTS_ONLY")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    eprintln!(
        "fault matrix: seed {seed} (replay with DSA_FAULTS_SEED={seed}), {}",
        if full() {
            "full counts"
        } else {
            "smoke counts (DSA_FAULTS=full for the full matrix)"
        }
    );
    let mut h = Harness::start(seed);
    let t0 = Instant::now();
    let (first, v) = h.converge();
    assert!(
        v.is_empty(),
        "the fleet never converged before any fault: {v:#?}"
    );
    eprintln!("fleet converged in {:?}", first.unwrap());
    h.checker_sees_planted_leaks();
    let (again, v) = h.converge();
    assert!(
        again.is_some(),
        "the planted leaks removed, the fleet converges: {v:#?}"
    );

    let mut schedule: Vec<Fault> = Fault::ALL
        .iter()
        .filter(|f| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|n| n == f.name()))
        })
        .flat_map(|f| {
            let (smoke, all) = f.counts();
            std::iter::repeat_n(*f, if full() { all } else { smoke })
        })
        .collect();
    assert!(!schedule.is_empty(), "DSA_FAULTS_ONLY named no fault");
    // a seeded shuffle: faults meet each other's after-effects in a replayable order
    for i in (1..schedule.len()).rev() {
        let j = h.rng.random_range(0..=i);
        schedule.swap(i, j);
    }
    // a time box on a shared machine: the fault in progress finishes, the fleet is checked and
    // removed as after a whole run, and the table says how many ran
    let budget = std::env::var("DSA_FAULTS_MINUTES")
        .ok()
        .and_then(|m| m.parse::<f64>().ok())
        .map(|m| Duration::from_secs_f64(m * 60.0));
    let mut outcomes: Vec<Outcome> = vec![];
    for (k, fault) in schedule.iter().enumerate() {
        if budget.is_some_and(|b| t0.elapsed() > b) {
            eprintln!(
                "time box DSA_FAULTS_MINUTES spent: {k} of {} faults injected",
                schedule.len()
            );
            break;
        }
        let o = h.inject(*fault);
        eprintln!(
            "[{}/{}] {} {}: {}",
            k + 1,
            schedule.len(),
            fault.name(),
            o.detail,
            match o.converged {
                Some(d) => format!("converged in {} ms", d.as_millis()),
                None => format!("NOT converged in {CONVERGE:?}: {:#?}", o.violations),
            }
        );
        let stop = o.converged.is_none();
        outcomes.push(o);
        if stop {
            // the fleet is broken: what follows would only repeat this violation
            break;
        }
    }
    let elapsed = t0.elapsed();

    // the table
    let mut table = String::from(
        "| fault | injected | violations | converge p50 | converge p99 |\n|---|---|---|---|---|\n",
    );
    let mut report = vec![];
    for fault in Fault::ALL {
        let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.fault == fault).collect();
        if mine.is_empty() {
            continue;
        }
        let mut times: Vec<Duration> = mine.iter().filter_map(|o| o.converged).collect();
        times.sort();
        let violations = mine.iter().filter(|o| !o.violations.is_empty()).count();
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
        };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            fault.name(),
            mine.len(),
            violations,
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99))
        ));
        report.push(
            json!({"fault": fault.name(), "injected": mine.len(), "violations": violations,
            "p50_ms": percentile(&times, 0.5).map(|d| d.as_millis() as u64),
            "p99_ms": percentile(&times, 0.99).map(|d| d.as_millis() as u64)}),
        );
    }
    eprintln!(
        "\nseed {seed}, {} faults in {:.0} s\n{table}",
        outcomes.len(),
        elapsed.as_secs_f64()
    );
    if let Ok(path) = std::env::var("DSA_FAULTS_REPORT") {
        let doc = json!({"seed": seed, "full": full(), "seconds": elapsed.as_secs(),
            "faults": report,
            "violations": outcomes.iter().filter(|o| !o.violations.is_empty())
                .map(|o| json!({"fault": o.fault.name(), "detail": o.detail, "violations": o.violations}))
                .collect::<Vec<_>>()});
        std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    }
    let bad: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.violations.is_empty())
        .map(|o| {
            format!(
                "{} ({}):\n  {}",
                o.fault.name(),
                o.detail,
                o.violations.join("\n  ")
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "seed {seed}: invariant violations:\n{}",
        bad.join("\n")
    );
}
