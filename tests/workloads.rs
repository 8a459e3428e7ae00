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
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_for, Containerd, Guard};
use daemonset_agent::runtime::{
    chain, ContainerRequest, ContainerdRuntime, PodMeta, PodSandbox, PortMapping, PullPolicy,
    Runtime, RuntimeError, SandboxInfo, TaskState,
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
        reservations: std::fs::read_dir(net.ipam_dir.join(&net.name))
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().to_string();
                        n != "lock" && !n.starts_with("last_reserved_ip")
                    })
                    .count()
            })
            .unwrap_or(0),
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
        PodSandbox {
            uid: uid.to_string(),
            namespace: "default".into(),
            name: format!("pod-{uid}"),
            host_network: spec.host_network.unwrap_or(false),
            host_ipc: spec.host_ipc.unwrap_or(false),
            labels: BTreeMap::new(),
            port_mappings: PortMapping::of(spec),
        }
    }

    /// Runs container `c` of a pod with `spec` (sandbox made on the way), as the agent does.
    async fn start(
        &self,
        uid: &str,
        spec: &PodSpec,
        c: &Container,
        sandbox: &SandboxInfo,
    ) -> Result<String, RuntimeError> {
        let img = self
            .rt
            .image_for(c.image.as_deref().unwrap(), PullPolicy::of(c))
            .await?;
        let id = format!("{uid}_{}", c.name);
        let req = ContainerRequest {
            id: id.clone(),
            labels: BTreeMap::new(),
            pod_spec: spec.clone(),
            container: c.clone(),
            image: img,
            sandbox: sandbox.clone(),
            hostname: format!("pod-{uid}"),
            log_path: self.state.join("logs").join(format!("{id}.log")),
            pod: PodMeta {
                name: format!("pod-{uid}"),
                namespace: "default".into(),
                uid: uid.to_string(),
                host_ips: vec!["192.0.2.2".into()],
                ..Default::default()
            },
        };
        self.rt.run_container(&req).await.map(|()| id)
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

fn pod_spec(v: Value) -> PodSpec {
    serde_json::from_value(v).expect("pod spec")
}

fn container(v: Value) -> Container {
    serde_json::from_value(v).expect("container")
}

/// GET `path` of `addr` over HTTP/1.0, read until the peer closes (10 s at most).
fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = addr.parse().expect("an address");
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
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
    let copy = |from: &str, to: &str| {
        let ok = Command::new("skopeo")
            .args([
                "copy",
                "-q",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
            ])
            .arg(format!("docker://{from}"))
            .arg(format!("docker://{to}"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "skopeo copy {from} {to}");
    };
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
