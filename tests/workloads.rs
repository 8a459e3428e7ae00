//! Real DaemonSet workloads (issue 11), with real parts only: containerd 1.6 + runc, Debian's CNI
//! plugins (bridge, host-local, portmap) on a bridge, subnet, IPAM directory and configuration
//! directory of each test's own, the loopback registry, and for the API tests the
//! `daemonset-agent` binary as server and agent with the real kubectl.
//!
//! The runtime tests drive `ContainerdRuntime` directly (the pod network, fieldRef, pull
//! policies, hostPath propagation, and 200 create/delete cycles counted for leaks); the API tests
//! run the node_exporter-style DaemonSet, a CNI pod reporting its IP, and the refusals.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::authreg::AuthRegistry;
use common::{http_get, wait_for, Containerd, Guard, MountNs};
use daemonset_agent::runtime::{
    chain, labels, pull, ContainerRequest, ContainerdRuntime, PodMeta, PodSandbox, PortMapping,
    PullPolicy, Runtime, RuntimeError, SandboxInfo, TaskState,
};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{json, Value};

fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

fn image(tag: &str) -> String {
    format!("{}/busybox:{tag}", common::registry())
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A CNI network of the test's own: configuration directory, bridge, /24 and IPAM directory,
/// never the default's (`dsa0`, /etc/cni/net.d), so parallel tests and a running quickstart
/// never meet.
struct TestNet {
    name: String,
    bridge: String,
    /// `10.A.B`: the /24 is `10.A.B.0/24`, its gateway (the bridge) `10.A.B.1`.
    prefix: String,
    conf_dir: PathBuf,
    ipam_dir: PathBuf,
}

impl TestNet {
    fn new(dir: &Path) -> TestNet {
        let r = rand::random::<u32>();
        let bridge = format!("dsat{:08x}", r);
        let name = format!("dsa-test-{:08x}", r);
        // 10.200.0.0 - 10.239.255.0: far from the default's /24
        let prefix = format!("10.{}.{}", 200 + (r >> 8) % 40, r % 256);
        let conf_dir = dir.join("cni-conf");
        let ipam_dir = dir.join("cni-ipam");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let conf = json!({"cniVersion": "1.0.0", "name": name, "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("{prefix}.0/24")}]],
                      "dataDir": ipam_dir}},
            {"type": "portmap", "capabilities": {"portMappings": true}}]});
        std::fs::write(
            conf_dir.join("10-test.conflist"),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .unwrap();
        TestNet {
            name,
            bridge,
            prefix,
            conf_dir,
            ipam_dir,
        }
    }

    fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    fn bin_dirs() -> Vec<PathBuf> {
        vec![PathBuf::from("/usr/lib/cni")]
    }
}

impl Drop for TestNet {
    /// What a failed test may have left of its network: the bridge and the NAT rules naming it
    /// (the bridge and portmap plugins tag them with the network's name), with their chains.
    fn drop(&mut self) {
        let rules = run("iptables", &["-t", "nat", "-S"]);
        let mut chains = std::collections::BTreeSet::new();
        for rule in rules.lines().filter(|l| l.contains(&self.name)) {
            if let Some(chain) = rule
                .split(" -j ")
                .nth(1)
                .filter(|c| c.starts_with("CNI-") && !c.starts_with("CNI-HOSTPORT-"))
            {
                chains.insert(chain.trim().to_string());
            }
            if let Some(spec) = rule.strip_prefix("-A ") {
                // iptables -S quotes as a shell does
                let _ = Command::new("sh")
                    .arg("-c")
                    .arg(format!("iptables -t nat -D {spec}"))
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for c in chains {
            let _ = Command::new("iptables")
                .args(["-t", "nat", "-F", &c])
                .status();
            let _ = Command::new("iptables")
                .args(["-t", "nat", "-X", &c])
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

/// What a pod network can leave behind, counted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leaks {
    /// Mounts under the agent's state directory (network and IPC namespaces, tmpfs volumes).
    mounts: usize,
    /// veth interfaces on the test's bridge.
    veths: usize,
    /// IP reservations of host-local.
    reservations: usize,
    /// iptables NAT rules naming the test's network (masquerade, hostPort DNAT).
    nat_rules: usize,
    /// Files the agent keeps per sandbox: records, CNI caches, pod directories.
    agent_files: usize,
    /// containerd containers and snapshots of the namespace.
    containers: usize,
    snapshots: usize,
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

/// The host-local reservations of network `name` under `ipam_dir` (its IPs).
fn reservations(ipam_dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(ipam_dir.join(name))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
        .collect()
}

fn leaks(net: &TestNet, state: &Path, mounts: &[String], ctd: &Path, ns: &str) -> Leaks {
    let state_s = format!("{}/", state.display());
    let ctr = |args: &[&str]| {
        let mut full = vec!["--address", ctd.to_str().unwrap(), "-n", ns];
        full.extend_from_slice(args);
        run("ctr", &full)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    };
    Leaks {
        mounts: mounts.iter().filter(|m| m.starts_with(&state_s)).count(),
        veths: run("ip", &["-o", "link", "show", "master", &net.bridge])
            .lines()
            .filter(|l| l.contains("veth"))
            .count(),
        reservations: reservations(&net.ipam_dir, &net.name).len(),
        nat_rules: run("iptables", &["-t", "nat", "-S"])
            .lines()
            .filter(|l| l.contains(&net.name))
            .count(),
        agent_files: count_files(&state.join("sandboxes"))
            + count_files(&state.join("cni"))
            + count_files(&state.join("pods"))
            + count_files(&state.join("netns"))
            + count_files(&state.join("ipcns")),
        containers: ctr(&["containers", "ls", "-q"]),
        snapshots: ctr(&["snapshots", "ls"]).saturating_sub(1),
    }
}

fn host_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

/// The runtime against a containerd of the test's own, with the test's network.
struct RtEnv {
    _guard: Guard,
    ns: String,
    ctd: Containerd,
    rt: ContainerdRuntime,
    state: PathBuf,
    net: TestNet,
}

async fn rt_env() -> RtEnv {
    let ctd = Containerd::start();
    let state = ctd.path().join("agent-state");
    let net = TestNet::new(ctd.path());
    let ns = unique("dsa-test-wl");
    let rt = ContainerdRuntime::connect(&ctd.socket, &ns, &state)
        .await
        .expect("connect to containerd")
        .with_network(&net.conf_dir, &TestNet::bin_dirs());
    RtEnv {
        _guard: Guard::new().containerd(&ctd).link(&net.bridge),
        ns,
        ctd,
        rt,
        state,
        net,
    }
}

impl RtEnv {
    fn leaks(&self) -> Leaks {
        leaks(
            &self.net,
            &self.state,
            &host_mounts(),
            &self.ctd.socket,
            &self.ns,
        )
    }

    fn pod(&self, uid: &str, spec: &PodSpec) -> PodSandbox {
        pod_sandbox(uid, spec)
    }

    /// Runs container `c` of a pod with `spec` (sandbox made on the way), as the agent does.
    async fn start(
        &self,
        uid: &str,
        spec: &PodSpec,
        c: &Container,
        sandbox: &SandboxInfo,
    ) -> Result<String, RuntimeError> {
        start_container(&self.rt, &self.state, uid, spec, c, sandbox).await
    }

    async fn wait_exit(&self, id: &str) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = self
                .rt
                .list_containers()
                .await
                .unwrap()
                .into_iter()
                .find(|c| c.id == id)
                .map(|c| c.state);
            if let Some(TaskState::Stopped { exit_code, .. }) = st {
                return exit_code;
            }
            assert!(Instant::now() < deadline, "{id} never exited: {st:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The sandbox of pod `uid`, labelled as the agent labels its pods (so that a runtime started
/// later lists it).
fn pod_sandbox(uid: &str, spec: &PodSpec) -> PodSandbox {
    let name = format!("pod-{uid}");
    PodSandbox {
        uid: uid.to_string(),
        namespace: "default".into(),
        name: name.clone(),
        host_network: spec.host_network.unwrap_or(false),
        host_ipc: spec.host_ipc.unwrap_or(false),
        labels: BTreeMap::from([
            (labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into()),
            (labels::POD_UID.into(), uid.to_string()),
            (labels::POD_NAME.into(), name),
            (labels::POD_NAMESPACE.into(), "default".into()),
        ]),
        port_mappings: PortMapping::of(spec),
    }
}

/// Runs container `c` of pod `uid` in `sandbox`, as the agent does.
async fn start_container(
    rt: &ContainerdRuntime,
    state: &Path,
    uid: &str,
    spec: &PodSpec,
    c: &Container,
    sandbox: &SandboxInfo,
) -> Result<String, RuntimeError> {
    let img = rt
        .image_for(c.image.as_deref().unwrap(), PullPolicy::of(c))
        .await?;
    let id = format!("{uid}_{}", c.name);
    let mut container_labels = pod_sandbox(uid, spec).labels;
    container_labels.insert(labels::CONTAINER_NAME.into(), c.name.clone());
    let req = ContainerRequest {
        id: id.clone(),
        labels: container_labels,
        pod_spec: spec.clone(),
        container: c.clone(),
        image: img,
        sandbox: sandbox.clone(),
        hostname: format!("pod-{uid}"),
        log_path: state.join("logs").join(format!("{id}.log")),
        pod: PodMeta {
            name: format!("pod-{uid}"),
            namespace: "default".into(),
            uid: uid.to_string(),
            host_ips: vec!["192.0.2.2".into()],
            ..Default::default()
        },
    };
    rt.run_container(&req).await.map(|()| id)
}

fn pod_spec(v: Value) -> PodSpec {
    serde_json::from_value(v).expect("pod spec")
}

fn container(v: Value) -> Container {
    serde_json::from_value(v).expect("container")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_pods_reach_each_other_by_pod_ip_and_a_host_port_reaches_a_pod() {
    let e = rt_env().await;
    // the image is pulled once, outside the count
    e.rt.ensure_image(&image("v1")).await.unwrap();
    let before = e.leaks();
    let host_port = common::free_port();
    let server_spec = pod_spec(json!({"containers": [
        {"name": "web", "image": image("v1"), "ports": [{"containerPort": 8080, "hostPort": host_port}]}]}));
    let token = unique("token");
    let server = container(
        json!({"name": "web", "image": image("v1"), "command": ["sh", "-c",
        format!("mkdir -p /www && echo {token} > /www/index.html && exec httpd -f -p 8080 -h /www")]}),
    );
    let a = unique("a");
    let sa =
        e.rt.create_sandbox(&e.pod(&a, &server_spec))
            .await
            .expect("sandbox a");
    assert_eq!(sa.ips.len(), 1, "{sa:?}");
    let ip_a = sa.ips[0].clone();
    assert!(ip_a.starts_with(&format!("{}.", e.net.prefix)), "{ip_a}");
    e.start(&a, &server_spec, &server, &sa)
        .await
        .expect("start the server");

    // pod B fetches pod A's page by pod IP
    let client_spec = pod_spec(json!({"containers": []}));
    let b = unique("b");
    let sb =
        e.rt.create_sandbox(&e.pod(&b, &client_spec))
            .await
            .expect("sandbox b");
    assert_ne!(sb.ips, sa.ips);
    let client = container(
        json!({"name": "get", "image": image("v1"), "command": ["sh", "-c",
        format!("for i in $(seq 100); do wget -q -O- http://{ip_a}:8080/ > /dev/termination-log && exit 0; sleep 0.1; done; exit 1")]}),
    );
    let id_b = e
        .start(&b, &client_spec, &client, &sb)
        .await
        .expect("start the client");
    assert_eq!(e.wait_exit(&id_b).await, 0, "pod B reached pod A by its IP");
    let got = e.rt.termination_message(&id_b, None).await;
    assert_eq!(got.as_deref().map(str::trim), Some(token.as_str()));

    // the node reaches pod A through its hostPort (portmap's DNAT of local addresses)
    let page = wait_for("the hostPort answers", Duration::from_secs(20), || {
        http_get(&format!("{}:{host_port}", e.net.gateway()), "/")
            .ok()
            .filter(|p| p.contains(&token))
    });
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    let dnat = run("iptables", &["-t", "nat", "-S"]);
    assert!(
        dnat.lines()
            .any(|l| l.contains(&format!("--dport {host_port}")) && l.contains(&ip_a)),
        "no DNAT for the hostPort: {dnat}"
    );

    // gone: the pods' network and everything with them
    for (uid, id) in [(&a, format!("{a}_web")), (&b, id_b)] {
        e.rt.stop_container(&id, Duration::from_secs(5))
            .await
            .unwrap();
        e.rt.remove_container(&id).await.unwrap();
        e.rt.remove_sandbox(uid).await.unwrap();
    }
    let after = e.leaks();
    assert_eq!(after, before, "what the pods left");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_name_and_pod_ip_from_field_refs() {
    let e = rt_env().await;
    let spec = pod_spec(json!({"nodeName": "node-7", "containers": []}));
    let c = container(json!({"name": "c", "image": image("v1"),
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}}],
        "resources": {"limits": {"memory": "32Mi"}},
        "command": ["sh", "-c", "echo \"$NODE_NAME $POD_IP $HOST_IP $MEM $(hostname)\" > /dev/termination-log"]}));
    let uid = unique("f");
    let sb = e.rt.create_sandbox(&e.pod(&uid, &spec)).await.unwrap();
    let id = e.start(&uid, &spec, &c, &sb).await.unwrap();
    assert_eq!(e.wait_exit(&id).await, 0);
    let msg =
        e.rt.termination_message(&id, None)
            .await
            .unwrap_or_default();
    assert_eq!(
        msg.trim(),
        format!("node-7 {} 192.0.2.2 32 pod-{uid}", sb.ips[0])
    );
    // /etc/hosts names the pod by its IP, as the kubelet writes it
    let hosts = std::fs::read_to_string(sb.pod_dir.join("etc/hosts")).unwrap();
    assert!(
        hosts.contains(&format!("{}\tpod-{uid}\n", sb.ips[0])),
        "{hosts}"
    );
    e.rt.remove_container(&id).await.unwrap();
    e.rt.remove_sandbox(&uid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_policies() {
    let e = rt_env().await;
    let repo = format!("{}/{}", common::registry(), unique("wl-policy"));
    let copy = |from: &str, to: &str| skopeo_copy(from, to, &[]);
    let tag = format!("{repo}:moving");
    // Never: a missing image is not pulled
    match e.rt.image_for(&tag, PullPolicy::Never).await {
        Err(RuntimeError::ImageNeverPull { image }) => assert_eq!(image, tag),
        other => panic!("{other:?}"),
    }
    let e_reason = RuntimeError::ImageNeverPull { image: tag.clone() };
    assert_eq!(e_reason.reason(), "ErrImageNeverPull");
    assert_eq!(
        chain(&e_reason),
        format!("Container image \"{tag}\" is not present with pull policy of Never")
    );
    copy(&image("v1"), &tag);
    let first =
        e.rt.image_for(&tag, PullPolicy::IfNotPresent)
            .await
            .unwrap();
    // the tag moves to another image
    copy(&image("v2"), &tag);
    let present =
        e.rt.image_for(&tag, PullPolicy::IfNotPresent)
            .await
            .unwrap();
    assert_eq!(
        present.info.digest, first.info.digest,
        "IfNotPresent keeps the present one"
    );
    let never = e.rt.image_for(&tag, PullPolicy::Never).await.unwrap();
    assert_eq!(never.info.digest, first.info.digest);
    let always = e.rt.image_for(&tag, PullPolicy::Always).await.unwrap();
    assert_ne!(
        always.info.digest, first.info.digest,
        "Always resolves the tag again"
    );
}

/// Copies image `from` to `to` between loopback registries (`extra`: skopeo's flags).
fn skopeo_copy(from: &str, to: &str, extra: &[&str]) {
    let ok = Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .args(extra)
        .arg(format!("docker://{from}"))
        .arg(format!("docker://{to}"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "skopeo copy {from} {to}");
}

/// The node's registry credentials (agent.toml registry-credentials, a docker config.json) log
/// pulls in to a registry that asks for them; without them the pull is refused.
#[tokio::test(flavor = "multi_thread")]
async fn node_credentials_log_pulls_in_to_a_private_registry() {
    let e = rt_env().await;
    let password = format!("pw-{:08x}", rand::random::<u32>());
    let reg = AuthRegistry::start(&e.ctd.path().join("private-registry"), "node", &password);
    let private = format!("{}/private/busybox:v1", reg.addr);
    skopeo_copy(
        &image("v1"),
        &private,
        &[&format!("--dest-creds=node:{password}")],
    );

    let err =
        e.rt.image_for(&private, PullPolicy::IfNotPresent)
            .await
            .expect_err("an anonymous pull");
    assert_eq!(err.reason(), "ErrImagePull", "{}", chain(&err));

    let file = e.ctd.path().join("registries.json");
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("node:{password}"),
    );
    std::fs::write(
        &file,
        json!({"auths": {reg.addr.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let logged_in = ContainerdRuntime::connect(&e.ctd.socket, &e.ns, &e.state)
        .await
        .unwrap()
        .with_credentials(pull::Credentials::load(&file).expect("the credentials file"));
    let pulled = logged_in
        .image_for(&private, PullPolicy::IfNotPresent)
        .await
        .unwrap_or_else(|e| panic!("a pull with the node's credentials: {}", chain(&e)));
    let public = e.rt.ensure_image(&image("v1")).await.unwrap();
    assert_eq!(pulled.info.digest, public.info.digest, "the same image");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_to_container_sees_later_host_mounts_and_host_path_types_are_checked() {
    let e = rt_env().await;
    // a shared mount of the test's own (on a systemd host `/` is one)
    let shared = e.ctd.path().join("shared");
    std::fs::create_dir_all(shared.join("later")).unwrap();
    let sh = |cmd: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .status()
            .unwrap()
            .success();
        assert!(ok, "{cmd}");
    };
    let s = shared.display();
    sh(&format!("mount --bind {s} {s} && mount --make-rshared {s}"));
    let spec = pod_spec(json!({"containers": [], "volumes": [
        {"name": "host", "hostPath": {"path": shared, "type": "Directory"}},
        {"name": "sock", "hostPath": {"path": shared.join("missing.sock"), "type": "Socket"}}]}));
    // each watches for the marker; told to stop, it says whether it sees it then (exit 0) or not (3)
    let watcher = |name: &str, propagation: &str| {
        container(json!({"name": name, "image": image("v1"),
            "volumeMounts": [{"name": "host", "mountPath": "/host", "mountPropagation": propagation}],
            "command": ["sh", "-c", "trap 'if [ -e /host/later/marker ]; then exit 0; else exit 3; fi' TERM; while ! [ -e /host/later/marker ]; do sleep 0.1; done; cat /host/later/marker > /dev/termination-log"]}))
    };
    let uid = unique("p");
    let sb = e.rt.create_sandbox(&e.pod(&uid, &spec)).await.unwrap();
    let slave = e
        .start(&uid, &spec, &watcher("slave", "HostToContainer"), &sb)
        .await
        .unwrap();
    let private = e
        .start(&uid, &spec, &watcher("private", "None"), &sb)
        .await
        .unwrap();
    // mounted on the host after both started: only HostToContainer sees it
    sh(&format!(
        "mount -t tmpfs tmpfs {s}/later && echo from-the-host > {s}/later/marker"
    ));
    assert_eq!(
        e.wait_exit(&slave).await,
        0,
        "HostToContainer saw the new mount"
    );
    assert_eq!(
        e.rt.termination_message(&slave, None).await.as_deref(),
        Some("from-the-host\n")
    );
    // the new mount is on the host now (the slave saw it): the private one still does not see it
    e.rt.stop_container(&private, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(e.wait_exit(&private).await, 3, "None did not see it");

    // hostPath type Socket of a missing socket: the kubelet's FailedMount message
    let c = container(
        json!({"name": "s", "image": image("v1"), "command": ["true"],
        "volumeMounts": [{"name": "sock", "mountPath": "/s"}]}),
    );
    let err = e.start(&uid, &spec, &c, &sb).await.unwrap_err();
    assert_eq!(err.reason(), "ContainerCreating");
    assert!(
        chain(&err).ends_with(&format!(
            "MountVolume.SetUp failed for volume \"sock\" : hostPath {s}/missing.sock doesn't exist"
        )),
        "{}",
        chain(&err)
    );
    for id in [slave, private] {
        e.rt.remove_container(&id).await.unwrap();
    }
    e.rt.remove_sandbox(&uid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_pod_cycles_leave_nothing_behind() {
    let e = rt_env().await;
    // the image is pulled once, outside the count
    e.rt.ensure_image(&image("v1")).await.unwrap();
    let before = e.leaks();
    let c = container(json!({"name": "c", "image": image("v1"),
        "volumeMounts": [{"name": "mem", "mountPath": "/mem"}]}));
    const LANES: usize = 4;
    const CYCLES: usize = 50;
    let started = Instant::now();
    let lanes = (0..LANES).map(|_| {
        // a hostPort of each lane's own (portmap's rules come and go with each pod), and a tmpfs
        let spec = pod_spec(json!({"containers": [{"name": "c", "image": image("v1"),
            "ports": [{"containerPort": 80, "hostPort": common::free_port()}]}],
            "volumes": [{"name": "mem", "emptyDir": {"medium": "Memory"}}]}));
        let (e, c) = (&e, &c);
        async move {
            let spec = &spec;
            let lane = rand::random::<u16>();
            let mut ips = Vec::new();
            for i in 0..CYCLES {
                let uid = format!("churn-{lane}-{i}-{:08x}", rand::random::<u32>());
                let sb =
                    e.rt.create_sandbox(&e.pod(&uid, spec))
                        .await
                        .expect("sandbox");
                assert_eq!(sb.ips.len(), 1, "an IP every time");
                ips.push(sb.ips[0].clone());
                let id = e.start(&uid, spec, c, &sb).await.expect("start");
                e.rt.stop_container(&id, Duration::from_secs(5))
                    .await
                    .unwrap();
                e.rt.remove_container(&id).await.unwrap();
                e.rt.remove_sandbox(&uid).await.unwrap();
            }
            ips
        }
    });
    let ips: Vec<String> = futures::future::join_all(lanes).await.concat();
    let took = started.elapsed();
    assert_eq!(ips.len(), LANES * CYCLES);
    eprintln!(
        "{} pod create/delete cycles in {took:?} ({:.1}/s)",
        ips.len(),
        ips.len() as f64 / took.as_secs_f64()
    );
    assert_eq!(e.leaks(), before, "what {} cycles left", ips.len());
    assert!(took < Duration::from_secs(240), "the churn took {took:?}");
}

/// CNI plugins of this test still running (a plugin outlives a runtime that was cut off only
/// until its own end; the kill on drop is asynchronous).
fn plugins_running(state: &Path) -> usize {
    let netns = format!("CNI_NETNS={}", state.join("netns").display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| String::from_utf8_lossy(&env).contains(&netns))
        })
        .count()
}

/// An agent that stops at any point of a pod's creation or removal (here: the runtime's task
/// cut off at whatever await it is in, its CNI plugin killed) leaves what a restarted agent finds
/// and removes: its listing names every pod, and removing them leaves nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_cut_off_mid_churn_leaves_what_the_next_one_removes() {
    let e = rt_env().await;
    e.rt.ensure_image(&image("v1")).await.unwrap();
    let before = e.leaks();
    let spec = pod_spec(json!({"containers": [{"name": "c", "image": image("v1"),
        "ports": [{"containerPort": 80, "hostPort": common::free_port()}]}]}));
    let c = container(json!({"name": "c", "image": image("v1")}));
    let steps = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for round in 0..6usize {
        let rt = ContainerdRuntime::connect(&e.ctd.socket, &e.ns, &e.state)
            .await
            .unwrap()
            .with_network(&e.net.conf_dir, &TestNet::bin_dirs());
        let (state, spec, c, steps_in) = (e.state.clone(), spec.clone(), c.clone(), steps.clone());
        let churn = tokio::spawn(async move {
            use std::sync::atomic::Ordering::SeqCst;
            for i in 0.. {
                let uid = format!("cut-{round}-{i}-{:08x}", rand::random::<u32>());
                let sb = rt.create_sandbox(&pod_sandbox(&uid, &spec)).await.unwrap();
                steps_in.fetch_add(1, SeqCst);
                let id = start_container(&rt, &state, &uid, &spec, &c, &sb)
                    .await
                    .unwrap();
                steps_in.fetch_add(1, SeqCst);
                rt.stop_container(&id, Duration::from_secs(5))
                    .await
                    .unwrap();
                rt.remove_container(&id).await.unwrap();
                steps_in.fetch_add(1, SeqCst);
                // every other pod is left running, as a stopped agent leaves its pods
                if i % 2 == 0 {
                    rt.remove_sandbox(&uid).await.unwrap();
                    steps_in.fetch_add(1, SeqCst);
                }
            }
        });
        // cut off after a number of steps that moves the cut through the cycle
        let target = steps.load(std::sync::atomic::Ordering::SeqCst) + 3 + round;
        wait_for_async("the churn to make progress", || {
            steps.load(std::sync::atomic::Ordering::SeqCst) >= target
        })
        .await;
        churn.abort();
        assert!(churn.await.unwrap_err().is_cancelled(), "the churn failed");
    }
    let state = e.state.clone();
    wait_for(
        "the cut-off plugins to end",
        Duration::from_secs(30),
        || (plugins_running(&state) == 0).then_some(()),
    );
    // the next agent: every pod it finds is not wanted any more
    let next = ContainerdRuntime::connect(&e.ctd.socket, &e.ns, &e.state)
        .await
        .unwrap()
        .with_network(&e.net.conf_dir, &TestNet::bin_dirs());
    let listed = next.list_containers().await.unwrap();
    assert!(!listed.is_empty(), "the cut-off runtimes left pods");
    let mut uids = std::collections::BTreeSet::new();
    for entry in &listed {
        let uid = entry.labels.get(labels::POD_UID).expect("a pod uid label");
        uids.insert(uid.clone());
        if entry.labels.contains_key(labels::CONTAINER_NAME) {
            next.stop_container(&entry.id, Duration::from_secs(5))
                .await
                .unwrap();
            next.remove_container(&entry.id).await.unwrap();
        }
    }
    for uid in &uids {
        next.remove_sandbox(uid).await.unwrap();
    }
    assert!(next.list_containers().await.unwrap().is_empty());
    assert_eq!(e.leaks(), before, "what {} cut-off pods left", uids.len());
}

/// The node's network changes under a running pod (another configuration now sorts first, as
/// when a network plugin's DaemonSet writes its own): the pod's DEL goes to the network of its
/// ADD, whose address it frees, and never to the new one.
#[tokio::test(flavor = "multi_thread")]
async fn a_del_frees_the_address_of_its_add_after_the_configuration_changed() {
    let e = rt_env().await;
    let before = e.leaks();
    let spec = pod_spec(json!({"containers": []}));
    let uid = unique("moved");
    let sb = e.rt.create_sandbox(&e.pod(&uid, &spec)).await.unwrap();
    assert_eq!(sb.ips.len(), 1, "the pod has an address");
    assert_eq!(
        reservations(&e.net.ipam_dir, &e.net.name).len(),
        1,
        "reserved in the network of the ADD"
    );
    let other = TestNet::new(&e.ctd.path().join("other"));
    std::fs::copy(
        other.conf_dir.join("10-test.conflist"),
        e.net.conf_dir.join("00-other.conflist"),
    )
    .unwrap();
    e.rt.remove_sandbox(&uid).await.unwrap();
    assert_eq!(
        e.leaks(),
        before,
        "what the pod left in the network of its ADD"
    );
    assert!(
        reservations(&other.ipam_dir, &other.name).is_empty() && !other.ipam_dir.exists(),
        "the DEL went to the new network"
    );
}

/// A main plugin that hands its IPAM to host-local in a child process, as bridge does. The
/// child of an ADD waits for the file `go` beside the plugin (it says `started` first), so
/// that a test can cut the ADD off while its IPAM is still to come.
const DELEGATING_PLUGIN: &str = r#"#!/bin/sh
conf=$(cat)
dir=$(dirname "$0")
if [ "$CNI_COMMAND" = ADD ]; then
  (
    touch "$dir/started"
    while [ ! -e "$dir/go" ]; do sleep 0.02; done
    printf '%s' "$conf" | /usr/lib/cni/host-local
  ) &
  wait $!
  exit $?
fi
printf '%s' "$conf" | /usr/lib/cni/host-local
"#;

/// An ADD given up while the plugin's IPAM child runs (the pod deleted, the call timed out) and
/// the DEL that follows: the child goes with its plugin, so no address is reserved after the
/// DEL (a plugin killed alone left its host-local to reserve one that nothing frees).
#[tokio::test(flavor = "multi_thread")]
async fn an_add_cut_off_while_its_ipam_runs_leaves_no_reservation_after_the_del() {
    use std::os::unix::fs::PermissionsExt;
    let ctd = Containerd::start();
    let _guard = Guard::new().containerd(&ctd);
    let dir = ctd.path().join("cut-net");
    let (bin, conf_dir, ipam_dir) = (dir.join("bin"), dir.join("conf"), dir.join("ipam"));
    for d in [&bin, &conf_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let plugin = bin.join("delegating");
    std::fs::write(&plugin, DELEGATING_PLUGIN).unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let name = unique("dsa-test-cut");
    let conf = json!({"cniVersion": "1.0.0", "name": name, "plugins": [{"type": "delegating",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.240.7.0/24"}]], "dataDir": ipam_dir}}]});
    std::fs::write(
        conf_dir.join("10-cut.conflist"),
        serde_json::to_vec(&conf).unwrap(),
    )
    .unwrap();
    let state = ctd.path().join("agent-state");
    let rt = std::sync::Arc::new(
        ContainerdRuntime::connect(&ctd.socket, &unique("dsa-test-cut"), &state)
            .await
            .unwrap()
            .with_network(&conf_dir, &[bin.clone(), PathBuf::from("/usr/lib/cni")]),
    );
    let uid = unique("cut");
    let pod = pod_sandbox(&uid, &pod_spec(json!({"containers": []})));
    let add = tokio::spawn({
        let rt = rt.clone();
        async move { rt.create_sandbox(&pod).await }
    });
    wait_for_async("the IPAM child to start", || bin.join("started").exists()).await;
    add.abort();
    assert!(
        add.await.unwrap_err().is_cancelled(),
        "the ADD ended before it was cut off"
    );
    // the pod goes, as its worker removes it
    rt.remove_sandbox(&uid).await.unwrap();
    std::fs::write(bin.join("go"), "").unwrap();
    wait_for("the plugins to end", Duration::from_secs(30), || {
        (plugins_running(&state) == 0).then_some(())
    });
    assert_eq!(
        reservations(&ipam_dir, &name),
        Vec::<String>::new(),
        "reserved after the DEL"
    );
    assert!(
        !state.join("cni").join(format!("{uid}.json")).exists(),
        "the ADD's cache outlived its DEL"
    );
    let state_s = format!("{}/", state.display());
    assert!(
        !host_mounts().iter().any(|m| m.starts_with(&state_s)),
        "the sandbox's namespaces are still mounted"
    );
}

/// Polls `f` every 10 ms (on the runtime's clock: the tasks it waits for run meanwhile) for
/// 60 s at most.
async fn wait_for_async(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_without_containers_is_listed_and_removed() {
    let e = rt_env().await;
    let before = e.leaks();
    let spec = pod_spec(json!({"containers": []}));
    let uid = unique("orphan");
    let mut pod = e.pod(&uid, &spec);
    pod.labels = BTreeMap::from([
        (
            "io.daemonset-agent.managed-by".into(),
            "daemonset-agent".into(),
        ),
        ("io.daemonset-agent.pod.uid".into(), uid.clone()),
        ("io.daemonset-agent.pod.name".into(), pod.name.clone()),
        ("io.daemonset-agent.pod.namespace".into(), "default".into()),
    ]);
    let sb = e.rt.create_sandbox(&pod).await.unwrap();
    // an agent stopped here, before any container: a new runtime finds the sandbox by its record
    let again = ContainerdRuntime::connect(&e.ctd.socket, &e.ns, &e.state)
        .await
        .unwrap()
        .with_network(&e.net.conf_dir, &TestNet::bin_dirs());
    let listed = again.list_containers().await.unwrap();
    let entry = listed
        .iter()
        .find(|c| c.labels.get("io.daemonset-agent.pod.uid") == Some(&uid))
        .expect("the sandbox is listed");
    assert_eq!(entry.state, TaskState::Created);
    assert!(!entry
        .labels
        .contains_key("io.daemonset-agent.container.name"));
    // an adopted sandbox: its IPs from the cache, CHECKed
    let found = again
        .sandbox(&pod)
        .await
        .unwrap()
        .expect("the sandbox is there");
    assert_eq!(found.ips, sb.ips);
    again.remove_sandbox(&uid).await.unwrap();
    assert!(again.list_containers().await.unwrap().is_empty());
    assert_eq!(e.leaks(), before);
}

// ---- through the API: the server, an agent and kubectl -------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_daemonset-agent");

/// A process of the test (server or agent), its output in a file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(prefix: &[String], args: &[&str], log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let (program, pre) = match prefix.split_first() {
            Some((p, rest)) => (p.clone(), rest.to_vec()),
            None => (BIN.to_string(), vec![]),
        };
        let mut cmd = Command::new(program);
        cmd.args(pre);
        if !prefix.is_empty() {
            cmd.arg(BIN);
        }
        let child = cmd
            .args(args)
            .env("DSA_LOG", "debug")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn daemonset-agent");
        Proc { child, log }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server and one agent (node `NODE`) on a containerd of the test's own, the agent's pods on
/// the test's CNI network; in a mount namespace of the test's own when `mount_ns`.
struct Cluster {
    /// First, so it drops first: removes everything below and all the test made, pass or fail.
    _guard: Guard,
    dir: tempfile::TempDir,
    _server: Proc,
    agent: Proc,
    kubeconfig: PathBuf,
    ns: Option<MountNs>,
    _ctd: Containerd,
    net: TestNet,
}

const NODE: &str = "wl-node";

impl Cluster {
    fn start(mount_ns: bool) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("dsa-e2e-wl-")
            .tempdir_in("/tmp")
            .unwrap();
        // node_exporter (uid 65534) reads a directory below it through the host's /
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ns = mount_ns.then(|| MountNs::new(dir.path()));
        let ctd = Containerd::start_in(ns.as_ref());
        let net = TestNet::new(dir.path());
        let data = dir.path().join("server");
        let listen = format!("127.0.0.1:{}", common::free_port());
        let server = Proc::spawn(
            &[],
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
        let guard = Guard::new()
            .containerd(&ctd)
            .dir(dir.path())
            .link(&net.bridge);
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "container-logs-to-journald = false\ncni-conf-dir = \"{}\"\ncni-bin-dir = \"/usr/lib/cni\"\n",
                net.conf_dir.display()
            ),
        )
        .unwrap();
        wait_for("the server to answer", Duration::from_secs(30), || {
            kubeconfig.exists().then_some(())
        });
        let state = dir.path().join("agent");
        let prefix = ns.as_ref().map(MountNs::enter).unwrap_or_default();
        let agent = Proc::spawn(
            &prefix,
            &[
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
                &unique("dsa-test-wl-api"),
                "--state-dir",
                state.to_str().unwrap(),
            ],
            dir.path().join("agent.log"),
        );
        let c = Cluster {
            _guard: guard,
            dir,
            _server: server,
            agent,
            kubeconfig,
            ns,
            _ctd: ctd,
            net,
        };
        wait_for("the node to register", Duration::from_secs(30), || {
            c.kubectl(&["get", "node", NODE])
                .status
                .success()
                .then_some(())
        });
        c
    }

    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(common::kubectl())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// `kubectl apply` of `yaml`: Ok(stdout) or Err(stderr).
    fn apply(&self, yaml: &str) -> Result<String, String> {
        let f = self.dir.path().join(format!("{}.yaml", unique("apply")));
        std::fs::write(&f, yaml).unwrap();
        let out = self.kubectl(&["apply", "-f", f.to_str().unwrap()]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// The pod of DaemonSet `ds` (the first whose name starts with `ds-`), as JSON.
    fn pod(&self, ds: &str) -> Option<Value> {
        let out = self.kubectl(&["get", "pods", "-o", "json"]);
        let list: Value = serde_json::from_slice(&out.stdout).ok()?;
        list["items"]
            .as_array()?
            .iter()
            .find(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("{ds}-")))
            })
            .cloned()
    }

    /// Waits until the pod of `ds` is Ready (its probes passed), and returns it.
    fn wait_ready(&self, ds: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let pod = self.pod(ds);
            let ready = pod.as_ref().is_some_and(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if ready {
                return pod.unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "the pod of {ds} is not ready after {secs}s: {}\n--- agent ---\n{}",
                serde_json::to_string_pretty(&pod).unwrap(),
                self.agent.tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn status_line(proc_pid: i32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{proc_pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// The upstream node_exporter DaemonSet's shape (prometheus-community's chart): host network and
/// PID namespace, the host's /proc, /sys and / (HostToContainer) read-only, nobody, no
/// capabilities, httpGet probes.
#[test]
fn node_exporter_daemonset_serves_host_metrics_from_the_host_namespaces() {
    assert!(
        Path::new("/usr/bin/prometheus-node-exporter").exists(),
        "no /usr/bin/prometheus-node-exporter (the registry's node-exporter image is made of it): run scripts/install-deps.sh"
    );
    let c = Cluster::start(true);
    let port = common::free_port();
    // a directory the exporter's textfile collector reads through the host's /: a tmpfs is
    // mounted on it after the exporter started
    let later = c.dir.path().join("textfile");
    std::fs::create_dir(&later).unwrap();
    let yaml = format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: node-exporter
spec:
  selector:
    matchLabels: {{app: node-exporter}}
  template:
    metadata:
      labels: {{app: node-exporter}}
    spec:
      hostNetwork: true
      hostPID: true
      securityContext:
        runAsNonRoot: true
        runAsUser: 65534
        runAsGroup: 65534
      containers:
      - name: node-exporter
        image: {registry}/node-exporter:latest
        args:
        - --path.procfs=/host/proc
        - --path.sysfs=/host/sys
        - --path.rootfs=/host/root
        - --web.listen-address=127.0.0.1:{port}
        - --collector.textfile.directory=/host/root{later}
        ports:
        - {{name: metrics, containerPort: {port}, hostPort: {port}, protocol: TCP}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
        readinessProbe:
          httpGet: {{path: /, port: {port}}}
          periodSeconds: 1
        livenessProbe:
          httpGet: {{path: /, port: {port}}}
        volumeMounts:
        - {{name: proc, mountPath: /host/proc, readOnly: true}}
        - {{name: sys, mountPath: /host/sys, readOnly: true}}
        - {{name: root, mountPath: /host/root, readOnly: true, mountPropagation: HostToContainer}}
      volumes:
      - {{name: proc, hostPath: {{path: /proc}}}}
      - {{name: sys, hostPath: {{path: /sys}}}}
      - {{name: root, hostPath: {{path: /}}}}
"#,
        registry = common::registry(),
        later = later.display(),
    );
    c.apply(&yaml).expect("apply the node_exporter DaemonSet");
    let pod = c.wait_ready("node-exporter", 120);
    assert_eq!(pod["spec"]["nodeName"], NODE);

    // it serves the host's metrics
    let metrics = http_get(&format!("127.0.0.1:{port}"), "/metrics").expect("GET /metrics");
    assert!(metrics.starts_with("HTTP/1.0 200 OK"), "{metrics}");
    let btime = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("btime ").map(|v| v.trim().to_string()))
        .unwrap();
    let boot = metrics
        .lines()
        .find_map(|l| l.strip_prefix("node_boot_time_seconds "))
        .expect("node_boot_time_seconds");
    assert_eq!(
        boot.parse::<f64>().unwrap() as u64,
        btime.parse::<u64>().unwrap()
    );
    // the host's network interfaces (host network, host /sys)
    let host_if = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| n != "lo")
        .expect("a host interface");
    assert!(
        metrics.contains(&format!("device=\"{host_if}\"")),
        "no metrics of the host's {host_if}"
    );

    // its process is in the host's PID namespace, as nobody, with no capabilities
    let listen = format!("--web.listen-address=127.0.0.1:{port}");
    let pids = common::pids_with(&["node_exporter", &listen]);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let pid = pids[0];
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        std::fs::read_link("/proc/self/ns/pid").unwrap(),
        "hostPID: the exporter is in the host's PID namespace"
    );
    assert!(status_line(pid, "Uid").starts_with("65534\t"), "runAsUser");
    assert!(status_line(pid, "Gid").starts_with("65534\t"), "runAsGroup");
    assert_eq!(status_line(pid, "CapEff"), "0000000000000000");
    assert_eq!(status_line(pid, "CapBnd"), "0000000000000000");
    assert_eq!(status_line(pid, "NoNewPrivs"), "1");
    assert_eq!(
        status_line(pid, "Seccomp"),
        "0",
        "no seccompProfile: unconfined"
    );

    // a tmpfs mounted on the host after the start: HostToContainer shows it inside
    let ns = c.ns.as_ref().unwrap();
    let later_s = later.to_str().unwrap();
    ns.run(&["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", later_s]);
    ns.run(&[
        "sh",
        "-c",
        &format!("echo 'dsa_workloads_marker 42' > {later_s}/marker.prom"),
    ]);
    wait_for(
        "the exporter to read the later mount",
        Duration::from_secs(20),
        || {
            http_get(&format!("127.0.0.1:{port}"), "/metrics")
                .ok()
                .filter(|m| m.contains("\ndsa_workloads_marker 42\n"))
        },
    );
}

/// A pod with its own network: its IP in the pod's status (and `kubectl get pods -o wide`), in
/// its environment through fieldRef, and reachable from the node.
#[test]
fn a_cni_pod_reports_its_ip_and_learns_it_and_its_node_from_field_refs() {
    let c = Cluster::start(false);
    let yaml = format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: whoami
spec:
  selector:
    matchLabels: {{app: whoami}}
  template:
    metadata:
      labels: {{app: whoami, tier: node}}
    spec:
      containers:
      - name: web
        image: {registry}/busybox:v1
        env:
        - name: NODE_NAME
          valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}
        - name: POD_IP
          valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        - name: TIER
          valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['tier']"}}}}
        command: [sh, -c, 'mkdir -p /www && echo "$NODE_NAME $POD_IP $POD_NAME $TIER" > /www/index.html && exec httpd -f -p 8080 -h /www']
        readinessProbe:
          httpGet: {{path: /, port: 8080}}
          periodSeconds: 1
"#,
        registry = common::registry()
    );
    c.apply(&yaml).expect("apply");
    let pod = c.wait_ready("whoami", 120);
    let ip = pod["status"]["podIP"]
        .as_str()
        .expect("status.podIP")
        .to_string();
    assert!(ip.starts_with(&format!("{}.", c.net.prefix)), "{ip}");
    assert_eq!(pod["status"]["podIPs"], json!([{"ip": ip}]));
    assert_ne!(pod["status"]["hostIP"], json!(ip));
    let name = pod["metadata"]["name"].as_str().unwrap();
    // kubectl's wide listing shows it
    let wide = c.kubectl(&["get", "pods", "-o", "wide", "--no-headers"]);
    let wide = String::from_utf8_lossy(&wide.stdout);
    let row: Vec<&str> = wide
        .lines()
        .find(|l| l.starts_with(name))
        .expect("the pod's row")
        .split_whitespace()
        .collect();
    assert!(row.contains(&ip.as_str()) && row.contains(&NODE), "{row:?}");
    // the node reaches the pod by its IP; the pod learnt its IP, node, name and label
    let page = http_get(&format!("{ip}:8080"), "/").expect("GET the pod");
    assert!(
        page.ends_with(&format!("\r\n\r\n{NODE} {ip} {name} node\n")),
        "{page}"
    );
}

/// What a container that ended left in its termination-message file (or, with
/// FallbackToLogsOnError and no file, its log's end) is in its status, as the kubelet reports
/// it: lastState.terminated of the restarted container.
#[test]
fn termination_messages_reach_the_pod_status() {
    let c = Cluster::start(false);
    let yaml = |name: &str, policy: &str, script: &str| {
        format!(
            r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
spec:
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      hostNetwork: true
      containers:
      - name: c
        image: {registry}/busybox:v1
        terminationMessagePath: /tmp/ended
        terminationMessagePolicy: {policy}
        command: [sh, -c, '{script}']
"#,
            registry = common::registry()
        )
    };
    c.apply(&yaml("file", "File", "echo disk full > /tmp/ended; exit 3"))
        .expect("apply");
    c.apply(&yaml(
        "fallback",
        "FallbackToLogsOnError",
        "echo starting; echo cannot bind; exit 4",
    ))
    .expect("apply");
    for (ds, code, message) in [
        ("file", 3, "disk full\n"),
        ("fallback", 4, "starting\ncannot bind\n"),
    ] {
        let last = wait_for(
            &format!("{ds}: the restarted container's last state"),
            Duration::from_secs(90),
            || {
                let pod = c.pod(ds)?;
                let last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"].clone();
                last.is_object().then_some(last)
            },
        );
        assert_eq!(last["exitCode"], code, "{ds}: {last}");
        assert_eq!(last["reason"], "Error", "{ds}: {last}");
        assert_eq!(last["message"], message, "{ds}: {last}");
    }
}

/// Each field this node agent cannot honour is refused at admission, naming it.
#[test]
fn unsupported_fields_are_refused_naming_them() {
    let c = Cluster::start(false);
    let ds = |name: &str, spec: Value| {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c", "image": image("v1")}]);
        }
        serde_json::to_string(&json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
                "metadata": {"labels": {"app": name}}, "spec": spec}}}))
        .unwrap()
    };
    let container = |extra: Value| {
        let mut c = json!({"name": "c", "image": image("v1")});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        json!({"containers": [c]})
    };
    let cases = [
        (
            container(json!({"lifecycle": {"preStop": {"tcpSocket": {"port": 80}}}})),
            "spec.template.spec.containers[0].lifecycle.preStop.tcpSocket",
        ),
        (
            json!({"volumes": [{"name": "c", "csi": {"driver": "x"}}]}),
            "spec.template.spec.volumes[0].csi",
        ),
        (
            json!({"activeDeadlineSeconds": 30}),
            "spec.template.spec.activeDeadlineSeconds",
        ),
        (
            json!({"runtimeClassName": "gvisor"}),
            "spec.template.spec.runtimeClassName",
        ),
        (
            json!({"securityContext": {"seLinuxOptions": {"level": "s0"}}}),
            "spec.template.spec.securityContext.seLinuxOptions",
        ),
        (json!({"hostUsers": false}), "spec.template.spec.hostUsers"),
        (
            json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}], "containers": [{"name": "c",
                "image": image("v1"), "volumeMounts": [{"name": "h", "mountPath": "/h",
                "mountPropagation": "Bidirectional"}]}]}),
            "spec.template.spec.containers[0].volumeMounts[0].mountPropagation",
        ),
    ];
    for (i, (spec, field)) in cases.into_iter().enumerate() {
        let name = format!("refused-{i}");
        let err = c
            .apply(&ds(&name, spec))
            .expect_err(&format!("{field} was accepted"));
        assert!(
            err.contains(&format!("{field}: ")) && err.contains("The DaemonSet \"refused-"),
            "{field}: {err}"
        );
        assert!(
            err.contains("not supported by this node agent")
                || err.contains(
                    "Bidirectional mount propagation is available only to privileged containers"
                ),
            "{field}: {err}"
        );
    }
    // none was stored
    let out = c.kubectl(&["get", "daemonsets", "-o", "name"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
    // and a bare Pod is refused the same way
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "c", "image": image("v1")}], "initContainers": [{"name": "i", "image": image("v1"),
            "securityContext": {"windowsOptions": {"runAsUserName": "x"}}}]}});
    let err = c
        .apply(&pod.to_string())
        .expect_err("a Pod with an init container asking for Windows options");
    assert!(
        err.contains("spec.initContainers[0].securityContext.windowsOptions: Forbidden: not supported by this node agent"),
        "{err}"
    );
}
