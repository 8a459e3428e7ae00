//! A fleet on one machine: one server and N agents, each agent a node of its own with its own
//! containerd (its own socket, root and state, and a containerd namespace unique to the run), all
//! on a CNI network of the fleet's own (bridge, /24 and host-local data directory: never the
//! default's `dsa0`), so whatever the fleet leaves (reservations, veths) is its own to count.
//! Any process of it can be killed, frozen and started again on the same directories.
//!
//! Fields drop in order: the [`Guard`] first (processes, tasks, mounts, cgroups, directories),
//! then the network (bridge and NAT rules), then the containerds.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::api::Endpoint;
use super::proc::{AgentArgs, Proc};
use super::tcpproxy::TcpProxy;
use super::{wait_for, Containerd, Guard};

/// Debian's libfaketime (package `libfaketime`, pulled in by `faketime`).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// What a fleet starts with.
pub struct FleetOptions {
    pub agents: usize,
    /// Extra flags of `daemonset-agent server`.
    pub server_args: Vec<String>,
    /// Extra lines of every agent's configuration file (TOML).
    pub agent_config: String,
    /// When set, every agent's state directory is a tmpfs of this many MiB (to be filled).
    pub state_tmpfs_mib: Option<u32>,
    /// The nodes whose agent runs under libfaketime, its wall clock offset by what
    /// [`Fleet::set_clock`] writes (monotonic time is left alone).
    pub faketime: Vec<usize>,
}

impl Default for FleetOptions {
    fn default() -> FleetOptions {
        FleetOptions {
            agents: 3,
            server_args: vec![],
            agent_config: String::new(),
            state_tmpfs_mib: None,
            faketime: vec![],
        }
    }
}

/// A CNI network of the fleet's own (bridge plugin + host-local), in `DIR/cni-conf` with its
/// reservations in `DIR/cni-ipam/NAME`.
pub struct CniNet {
    pub name: String,
    pub bridge: String,
    pub conf_dir: PathBuf,
    pub ipam_dir: PathBuf,
}

impl CniNet {
    pub fn new(dir: &Path) -> CniNet {
        let r = rand::random::<u32>();
        let bridge = format!("dsaf{r:08x}");
        let name = format!("dsa-fleet-{r:08x}");
        // 10.160.0.0 - 10.199.255.0: apart from the default's /24 and tests/workloads.rs' range
        let prefix = format!("10.{}.{}", 160 + (r >> 8) % 40, r % 256);
        let conf_dir = dir.join("cni-conf");
        let ipam_dir = dir.join("cni-ipam");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": name, "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("{prefix}.0/24")}]],
                      "dataDir": ipam_dir}}]});
        std::fs::write(
            conf_dir.join("10-fleet.conflist"),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .unwrap();
        CniNet {
            ipam_dir: ipam_dir.join(&name),
            name,
            bridge,
            conf_dir,
        }
    }

    /// The host-local reservations: (address file, the container id it names: a pod's uid).
    pub fn reservations(&self) -> Vec<(String, String)> {
        std::fs::read_dir(&self.ipam_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().to_string();
                if file.starts_with("last_reserved_ip") || file == "lock" {
                    return None;
                }
                let text = std::fs::read_to_string(e.path()).ok()?;
                Some((file, text.lines().next().unwrap_or("").trim().to_string()))
            })
            .collect()
    }

    /// The interfaces enslaved to the bridge (the pods' veths).
    pub fn veths(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
}

impl Drop for CniNet {
    /// The bridge and the NAT rules naming the network (the bridge plugin tags its masquerade
    /// rules with the network's name), with their chains.
    fn drop(&mut self) {
        let rules = Command::new("iptables")
            .args(["-t", "nat", "-S"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
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
            for op in ["-F", "-X"] {
                let _ = Command::new("iptables")
                    .args(["-t", "nat", op, &c])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

/// One node: its agent (None while it is down), containerd, namespace and state directory, and
/// the loopback proxy its agent reaches the server through (cut it for a network partition).
pub struct FleetNode {
    pub name: String,
    /// The containerd namespace, unique to the run (runc's state directory is per namespace and
    /// shared by every containerd of the machine).
    pub namespace: String,
    pub state_dir: PathBuf,
    pub config: PathBuf,
    /// The agent's kubeconfig: the admin's, with the server's address replaced by the proxy's.
    pub kubeconfig: PathBuf,
    pub api: Option<TcpProxy>,
    pub agent: Option<Proc>,
    pub ctd: Containerd,
    /// libfaketime's control file when the agent runs under it (`+N`/`-N`: seconds of offset).
    pub clock_file: Option<PathBuf>,
}

pub struct Fleet {
    /// First, so it drops first: removes everything the fleet made, pass or fail.
    _guard: Guard,
    pub net: CniNet,
    pub dir: tempfile::TempDir,
    pub server: Option<Proc>,
    /// The server's extra flags, used by every (re)start: change them between a kill and a start.
    pub server_args: Vec<String>,
    /// The admin's endpoint, once the server wrote its kubeconfig.
    ep: Option<Endpoint>,
    pub listen: String,
    pub kubeconfig: PathBuf,
    pub nodes: Vec<FleetNode>,
    restarts: usize,
}

impl Fleet {
    /// The server, then the agents (nodes `n0`, `n1`, ...), each waited for until its Node is
    /// Ready.
    pub fn start(opts: FleetOptions) -> Fleet {
        super::require("iptables");
        assert!(
            opts.faketime.is_empty() || Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} is missing: install Debian's faketime (scripts/install-deps.sh)"
        );
        let dir = tempfile::Builder::new()
            .prefix("dsa-fleet-")
            .tempdir_in("/tmp")
            .unwrap();
        let listen = format!("127.0.0.1:{}", super::free_port());
        let kubeconfig = dir.path().join("server/admin.kubeconfig");
        let net = CniNet::new(dir.path());
        let run = format!("{:x}", rand::random::<u32>());
        let mut guard = Guard::new().dir(dir.path()).link(&net.bridge);
        let mut nodes = vec![];
        for i in 0..opts.agents {
            let name = format!("n{i}");
            let ctd = Containerd::start();
            guard = guard.containerd(&ctd);
            let config = dir.path().join(format!("agent-{name}.toml"));
            std::fs::write(
                &config,
                format!(
                    "container-logs-to-journald = false\ncni-conf-dir = {:?}\ncni-bin-dir = \"/usr/lib/cni\"\n{}",
                    net.conf_dir, opts.agent_config
                ),
            )
            .unwrap();
            let clock_file = opts.faketime.contains(&i).then(|| {
                let p = dir.path().join(format!("clock-{name}"));
                std::fs::write(&p, "+0\n").unwrap();
                p
            });
            nodes.push(FleetNode {
                clock_file,
                namespace: format!("ns-fleet{run}-{name}"),
                state_dir: dir.path().join(format!("agent-{name}")),
                kubeconfig: dir.path().join(format!("agent-{name}.kubeconfig")),
                api: None,
                name,
                config,
                agent: None,
                ctd,
            });
        }
        let mut f = Fleet {
            _guard: guard,
            net,
            dir,
            server: None,
            server_args: opts.server_args,
            ep: None,
            listen,
            kubeconfig,
            nodes,
            restarts: 0,
        };
        f.start_server();
        let admin = std::fs::read_to_string(&f.kubeconfig).unwrap();
        for n in &mut f.nodes {
            let proxy = TcpProxy::start(f.listen.parse().unwrap());
            let text = admin.replace(&f.listen, &proxy.addr.to_string());
            assert_ne!(text, admin, "the admin kubeconfig names {}", f.listen);
            std::fs::write(&n.kubeconfig, text).unwrap();
            n.api = Some(proxy);
        }
        if let Some(mib) = opts.state_tmpfs_mib {
            for n in &f.nodes {
                std::fs::create_dir_all(&n.state_dir).unwrap();
                let out = Command::new("mount")
                    .args([
                        "-t",
                        "tmpfs",
                        "-o",
                        &format!("size={mib}m,mode=0700"),
                        "tmpfs",
                    ])
                    .arg(&n.state_dir)
                    .output()
                    .expect("run mount");
                assert!(
                    out.status.success(),
                    "mount a tmpfs on {}: {}",
                    n.state_dir.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        for i in 0..f.nodes.len() {
            f.start_agent(i);
        }
        for i in 0..f.nodes.len() {
            f.wait_node_ready(i, Duration::from_secs(60));
        }
        f
    }

    fn log(&mut self, what: &str) -> PathBuf {
        self.restarts += 1;
        self.dir
            .path()
            .join(format!("{what}-{:03}.log", self.restarts))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("server")
    }

    /// Starts the server (again) on its data directory and address, and waits until it answers.
    pub fn start_server(&mut self) {
        let data = self.data_dir();
        let mut args: Vec<String> = vec![
            "server".into(),
            "--data-dir".into(),
            data.to_string_lossy().into(),
            "--listen".into(),
            self.listen.clone(),
        ];
        args.extend(self.server_args.iter().cloned());
        let log = self.log("server");
        self.server = Some(Proc::spawn(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            log,
        ));
        if self.ep.is_none() {
            wait_for("the admin kubeconfig", Duration::from_secs(30), || {
                let text = std::fs::read_to_string(&self.kubeconfig).ok()?;
                text.contains("token:").then_some(())
            });
            self.ep = Some(Endpoint::admin(self.listen.parse().unwrap(), &data));
        }
        wait_for("the server to answer", Duration::from_secs(30), || {
            (self.endpoint().try_get("/readyz").ok()?.0 == 200).then_some(())
        });
    }

    /// kill -9 of the server.
    pub fn kill_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill();
        }
    }

    /// Starts agent `i` (again) on its state directory, containerd and namespace.
    pub fn start_agent(&mut self, i: usize) {
        let log = self.log(&format!("agent-{}", self.nodes[i].name));
        let n = &self.nodes[i];
        let env: Vec<(String, String)> = match &n.clock_file {
            None => vec![],
            Some(file) => vec![
                ("LD_PRELOAD".into(), LIBFAKETIME.into()),
                (
                    "FAKETIME_TIMESTAMP_FILE".into(),
                    file.to_string_lossy().into(),
                ),
                // read the file at every clock read, so a step lands at once
                ("FAKETIME_NO_CACHE".into(), "1".into()),
                // tokio's timers and Instants stay on the real monotonic clock
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ],
        };
        let agent = Proc::agent_env(
            &AgentArgs {
                config: &n.config,
                node: &n.name,
                kubeconfig: &n.kubeconfig,
                socket: &n.ctd.socket,
                namespace: &n.namespace,
                state_dir: &n.state_dir,
            },
            log,
            &env,
        );
        self.nodes[i].agent = Some(agent);
    }

    /// Sets the wall-clock offset of agent `i` (one started under libfaketime) to `seconds`:
    /// its next clock read sees it.
    pub fn set_clock(&self, i: usize, seconds: i64) {
        let file = self.nodes[i]
            .clock_file
            .as_ref()
            .expect("the agent runs under libfaketime (FleetOptions::faketime)");
        // a rename, so the agent never reads a half-written file
        let tmp = file.with_extension("new");
        std::fs::write(&tmp, format!("{seconds:+}\n")).unwrap();
        std::fs::rename(&tmp, file).unwrap();
    }

    /// kill -9 of agent `i` (a frozen one too).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut a) = self.nodes[i].agent.take() {
            a.kill();
        }
    }

    /// The proxy between agent `i` and the server.
    pub fn api_link(&self, i: usize) -> &TcpProxy {
        self.nodes[i].api.as_ref().unwrap()
    }

    pub fn signal_agent(&self, i: usize, sig: i32) {
        if let Some(a) = &self.nodes[i].agent {
            a.signal(sig);
        }
    }

    /// The admin's endpoint (raw HTTP over verified TLS).
    pub fn endpoint(&self) -> Endpoint {
        self.ep.clone().expect("the server started")
    }

    /// GET `path` as JSON; None when the server does not answer 200.
    pub fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        let (code, body) = self.endpoint().try_get(path).ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Waits until node `i`'s Ready condition is True.
    pub fn wait_node_ready(&self, i: usize, timeout: Duration) {
        let name = &self.nodes[i].name;
        wait_for(&format!("node {name} Ready"), timeout, || {
            let node = self.get_json(&format!("/api/v1/nodes/{name}"))?;
            (node_condition(&node, "Ready") == Some("True")).then_some(())
        });
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(super::kubectl())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// `kubectl apply` of `yaml`, panicking on failure.
    pub fn apply(&self, yaml: &str) {
        let f = self
            .dir
            .path()
            .join(format!("apply-{:x}.yaml", rand::random::<u32>()));
        std::fs::write(&f, yaml).unwrap();
        let out = self.kubectl(&["apply", "-f", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "kubectl apply: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(f);
    }
}

/// The status of a Node's condition `type_`.
pub fn node_condition<'a>(node: &'a serde_json::Value, type_: &str) -> Option<&'a str> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
}
