//! The benchmark harness of issue 3: the agent and the server as separate processes against a
//! private containerd and a loopback registry, measured against the floor (a minimal gRPC client
//! doing the same containerd work) in the same run, and reported as ratios.
//!
//! Started by `bench/run.sh`, which builds it, starts containerd and the registry and cleans up:
//!
//! ```text
//! harness --bin target/release/daemonset-agent --socket DIR/containerd.sock --registry ADDR
//!         --dir DIR --tag TAG [--smoke] [--peers-json peers.json] [--json OUT.json]
//!         [--transport tls|plain]
//! ```
//!
//! `--transport` (default tls): how the agent, the bench's kube client and its raw watchers reach
//! the server: HTTPS verified against the server's CA, or plain HTTP on the server's loopback
//! `--insecure-listen`; both with the admin token (`bench/run.sh --tls-compare` runs both).
//!
//! Phases: (1) apply-to-running latency, interleaved with the floor's create+start; (3) 100
//! DaemonSets applied, updated and deleted concurrently, against 100 concurrent raw create+starts,
//! replacements and removals; (4) the agent's RSS and CPU with 100 pods and idle; (5) watch
//! fan-out of the server to 1000 and 5000 raw HTTP watchers; (6) a rollout over a fleet of agents
//! against its bound (`rollout`); (7) the pod network: apply-to-running of a pod with its own CNI
//! network against a hostNetwork pod, and churn throughput of CNI pods through the runtime against
//! raw create/delete; (8) the agent's RSS and CPU under 100 concurrent `logs -f` through the
//! server (`nodeapi`). Peers (2) come from bench/peers.sh.
//! RUNNING is a containerd `/tasks/start` event, received on one Events subscription.
//!
//! Exits non-zero when something breaks (a timeout, an error); missed targets are only reported.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use containerd_client::services::v1::SubscribeRequest;
use daemonset_agent::runtime::client::Ctd;
use daemonset_agent::runtime::containerd::{ContainerdRuntime, RawContainer};
use daemonset_agent::runtime::{
    spec, ContainerRequest, PodSandbox, PulledImage, Runtime, SandboxInfo,
};
use futures::future::join_all;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[path = "harness/nodeapi.rs"]
mod nodeapi;
#[path = "harness/replicaset.rs"]
mod replicaset;
#[path = "harness/rollout.rs"]
mod rollout;
#[path = "harness/scale.rs"]
mod scale;
#[path = "harness/simnode.rs"]
mod simnode;
#[path = "harness/soak.rs"]
mod soak;

const NODE: &str = "bench-node";
const GRACE: i64 = 2;

// ------------------------------------------------------------------------------------ options

struct Opts {
    bin: PathBuf,
    socket: PathBuf,
    registry: String,
    dir: PathBuf,
    tag: String,
    smoke: bool,
    json: Option<PathBuf>,
    peers_json: Option<PathBuf>,
    /// Sections to run (`--only latency,convergence,idle,fanout,rollout,network,nodeapi,rs,scale,soak`); all
    /// when empty.
    only: Vec<String>,
    /// HTTPS (true, the default) or plain HTTP on a loopback `--insecure-listen`.
    tls: bool,
}

impl Opts {
    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }

    fn parse() -> Result<Opts> {
        let mut a = std::env::args().skip(1);
        let (mut bin, mut socket, mut registry, mut dir) = (None, None, None, None);
        let (mut tag, mut smoke, mut json, mut peers_json) =
            ("bench".to_string(), false, None, None);
        let mut only = Vec::new();
        let mut tls = true;
        while let Some(k) = a.next() {
            let mut val = || a.next().ok_or_else(|| anyhow!("{k} needs a value"));
            match k.as_str() {
                "--bin" => bin = Some(PathBuf::from(val()?)),
                "--socket" => socket = Some(PathBuf::from(val()?)),
                "--registry" => registry = Some(val()?),
                "--dir" => dir = Some(PathBuf::from(val()?)),
                "--tag" => tag = val()?,
                "--json" => json = Some(PathBuf::from(val()?)),
                "--peers-json" => peers_json = Some(PathBuf::from(val()?)),
                "--smoke" => smoke = true,
                "--transport" => {
                    tls = match val()?.as_str() {
                        "tls" => true,
                        "plain" => false,
                        t => bail!("--transport: {t} is not tls or plain"),
                    }
                }
                "--only" => {
                    only = val()?.split(',').map(str::to_string).collect();
                    for s in &only {
                        if ![
                            "latency",
                            "convergence",
                            "idle",
                            "fanout",
                            "rollout",
                            "network",
                            "nodeapi",
                            "rs",
                            "scale",
                            "soak",
                        ]
                        .contains(&s.as_str())
                        {
                            bail!(
                                "--only: unknown section {s} (latency, convergence, idle, fanout, rollout, network, nodeapi, rs, scale, soak)"
                            );
                        }
                    }
                }
                // what `cargo bench` passes to harness = false targets
                "--bench" => {}
                other => bail!("unknown argument {other}"),
            }
        }
        Ok(Opts {
            bin: bin.ok_or_else(|| anyhow!("--bin is required"))?,
            socket: socket.ok_or_else(|| anyhow!("--socket is required"))?,
            registry: registry.ok_or_else(|| anyhow!("--registry is required"))?,
            dir: dir.ok_or_else(|| anyhow!("--dir is required"))?,
            tag,
            smoke,
            json,
            peers_json,
            only,
            tls,
        })
    }
}

/// Sizes of one run (full or smoke).
struct Sizes {
    latency_samples: usize,
    convergence: usize,
    footprint_window: Duration,
    settle: Duration,
    watchers: Vec<usize>,
    /// apply->running samples of each kind of pod (CNI, hostNetwork).
    network_samples: usize,
    /// create/delete cycles of the churn, in `CHURN_LANES` concurrent lanes.
    churn_cycles: usize,
}

// ------------------------------------------------------------------------------------ results

/// One line of the table.
struct Row {
    metric: String,
    value: String,
    floor: String,
    ratio: Option<f64>,
    target: String,
    pass: Option<bool>,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    json: serde_json::Map<String, Value>,
}

impl Report {
    fn row(&mut self, metric: &str, value: String, floor: String, ratio: Option<f64>) -> &mut Row {
        self.rows.push(Row {
            metric: metric.to_string(),
            value,
            floor,
            ratio,
            target: String::new(),
            pass: None,
        });
        let n = self.rows.len() - 1;
        &mut self.rows[n]
    }

    fn print(&self) {
        println!();
        println!(
            "{:<34} {:>22} {:>22} {:>7}  {:<16} verdict",
            "metric", "value", "floor", "ratio", "target"
        );
        for r in &self.rows {
            println!(
                "{:<34} {:>22} {:>22} {:>7}  {:<16} {}",
                r.metric,
                r.value,
                r.floor,
                r.ratio.map(|x| format!("{x:.2}")).unwrap_or_default(),
                r.target,
                match r.pass {
                    Some(true) => "PASS",
                    Some(false) => "MISS",
                    None => "",
                }
            );
        }
    }
}

impl Row {
    fn target(&mut self, t: &str, pass: bool) {
        self.target = t.to_string();
        self.pass = Some(pass);
    }
}

/// Nearest-rank percentile (as bench/peers.sh) of milliseconds.
fn pct(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn p3(xs: &[f64]) -> String {
    format!(
        "{:.0}/{:.0}/{:.0}",
        pct(xs, 50.0),
        pct(xs, 95.0),
        pct(xs, 99.0)
    )
}

// ------------------------------------------------------------------------------------ /proc

fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of /proc/PID/status (VmRSS:, RssAnon:, RssFile:).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Processes whose command line contains every one of `needles`: (count, total PSS in MiB).
/// The per-container processes beside the agent (runc shims, log drivers) are counted this way.
fn pss_of(needles: &[&str]) -> (usize, f64) {
    let (mut n, mut kib) = (0, 0u64);
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !needles.iter().all(|x| cmd.contains(x)) {
            continue;
        }
        let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Pss:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            });
        if let Some(p) = pss {
            n += 1;
            kib += p;
        }
    }
    (n, kib as f64 / 1024.0)
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU time of every thread of `pid` so far, in ns: the scheduler's own account
/// (`/proc/PID/task/*/schedstat`), where `/proc/PID/stat` counts 10 ms ticks, too coarse for
/// one event's fan-out (a few hundred ms of CPU in all).
fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        total += s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// Pins every thread of `pid` to CPU `cpu`, or lets them run anywhere again (None). New threads
/// inherit the mask of the thread that starts them.
fn pin(pid: u32, cpu: Option<usize>) -> Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    match cpu {
        Some(c) => set.set(c)?,
        None => {
            // SAFETY: sysconf has no preconditions
            let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
            for c in 0..n.min(CpuSet::count()) {
                set.set(c)?;
            }
        }
    }
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
            // a thread that ended meanwhile is no error
            let _ = sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set);
        }
    }
    Ok(())
}

/// Write syscalls and bytes written of `pid` so far (`syscw`, `wchar` of /proc/PID/io).
fn io_writes(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .parse()
            .ok()
    };
    Some((field("syscw:")?, field("wchar:")?))
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// RSS (max over 1 s samples, MiB) and CPU (% of one core) of `pid` over `window`, and the
/// RSS split at the end: anonymous (heap, stacks) and file-backed (mostly the binary's text).
async fn footprint(pid: u32, window: Duration) -> Result<(f64, f64, f64, f64)> {
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid).ok_or_else(|| anyhow!("process {pid} is gone"))?;
    let mut max_rss = rss_kib(pid).unwrap_or(0);
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1).min(window)).await;
        max_rss = max_rss.max(rss_kib(pid).ok_or_else(|| anyhow!("process {pid} is gone"))?);
    }
    let c1 = cpu_ticks(pid).ok_or_else(|| anyhow!("process {pid} is gone"))?;
    let cpu = (c1 - c0) as f64 / clk_tck() / t0.elapsed().as_secs_f64() * 100.0;
    let anon = status_kib(pid, "RssAnon:").unwrap_or(0) as f64 / 1024.0;
    let file = status_kib(pid, "RssFile:").unwrap_or(0) as f64 / 1024.0;
    Ok((max_rss as f64 / 1024.0, cpu, anon, file))
}

fn raise_nofile() -> Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    r.rlim_cur = r.rlim_max;
    // SAFETY: valid pointer to an rlimit
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    Ok(r.rlim_cur)
}

// ------------------------------------------------------------------------------------ processes

struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn spawn(bin: &Path, args: &[String], log: &Path, name: &'static str) -> Result<Proc> {
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn {} {name}", bin.display()))?;
        Ok(Proc { child, name })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("{} exited: {st}", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM as systemd would; SIGKILL after 5 s
        // SAFETY: kill with a pid we own
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------------ events

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topic {
    Start,
    Delete,
}

#[derive(Debug)]
struct Ev {
    at: Instant,
    topic: Topic,
    ns: String,
    id: String,
}

/// One Events subscription for the whole run (task starts and container deletes, every
/// namespace). containerd sends the stream's headers only with the first event, so the
/// subscription runs in its own task from the start.
fn spawn_events(ctd: Ctd) -> mpsc::UnboundedReceiver<Result<Ev, String>> {
    use prost::Message;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let req = ctd.req(SubscribeRequest {
            filters: vec![
                "topic==\"/tasks/start\"".to_string(),
                "topic==\"/containers/delete\"".to_string(),
            ],
        });
        let mut s = match ctd.events().subscribe(req).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                let _ = tx.send(Err(format!("subscribe: {}", e.message())));
                return;
            }
        };
        loop {
            let env = match s.message().await {
                Ok(Some(env)) => env,
                Ok(None) => {
                    let _ = tx.send(Err("event stream ended".into()));
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("event stream: {}", e.message())));
                    return;
                }
            };
            let at = Instant::now();
            let Some(any) = env.event else { continue };
            let ev = match env.topic.as_str() {
                "/tasks/start" => {
                    containerd_client::events::TaskStart::decode(any.value.as_slice())
                        .map(|e| (Topic::Start, e.container_id))
                }
                "/containers/delete" => {
                    containerd_client::events::ContainerDelete::decode(any.value.as_slice())
                        .map(|e| (Topic::Delete, e.id))
                }
                _ => continue,
            };
            match ev {
                Ok((topic, id)) => {
                    let ev = Ev {
                        at,
                        topic,
                        ns: env.namespace,
                        id,
                    };
                    if tx.send(Ok(ev)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("decode {}: {e}", env.topic)));
                    return;
                }
            }
        }
    });
    rx
}

struct Events {
    rx: mpsc::UnboundedReceiver<Result<Ev, String>>,
}

impl Events {
    /// The next event before `deadline`; None when the deadline passed.
    async fn next(&mut self, deadline: Instant) -> Result<Option<Ev>> {
        match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
            Err(_) => Ok(None),
            Ok(None) => bail!("event task ended"),
            Ok(Some(Err(e))) => bail!("containerd events: {e}"),
            Ok(Some(Ok(ev))) => Ok(Some(ev)),
        }
    }

    /// Waits for the first event matching `f`, discarding others.
    async fn wait(&mut self, what: &str, timeout: Duration, f: impl Fn(&Ev) -> bool) -> Result<Ev> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next(deadline).await? {
                Some(ev) if f(&ev) => return Ok(ev),
                Some(_) => {}
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
    }
}

/// The DaemonSet of an agent container id `<ns>_<ds>-xxxxx_<container>_<n>`.
fn ds_of(id: &str) -> Option<&str> {
    let pod = id.split('_').nth(1)?;
    Some(pod.rsplit_once('-')?.0)
}

// ------------------------------------------------------------------------------------ the floor

/// The minimal client: the agent's own lower-level containerd calls, no Kubernetes.
struct Floor {
    rt: ContainerdRuntime,
    v1: PulledImage,
    v2: PulledImage,
}

impl Floor {
    fn spec(&self, id: &str, img: &PulledImage) -> Result<Value> {
        let container = Container {
            name: "c".into(),
            image: Some(img.info.reference.clone()),
            ..Default::default()
        };
        let req = ContainerRequest {
            id: id.to_string(),
            labels: Default::default(),
            pod_spec: PodSpec {
                containers: vec![container.clone()],
                termination_grace_period_seconds: Some(GRACE),
                ..Default::default()
            },
            container,
            image: img.clone(),
            sandbox: SandboxInfo {
                pod_dir: PathBuf::from("/nonexistent"),
                ..Default::default()
            },
            hostname: id.to_string(),
            log_path: PathBuf::from("/dev/null"),
            pod: Default::default(),
        };
        let facts = spec::HostFacts::default();
        let mut spec =
            spec::build(&req, self.rt.namespace(), Path::new("/nonexistent"), &facts)?.spec;
        // the floor runs no host steps: without the pod's files (hosts, resolv.conf, hostname,
        // termination log), containerd's defaults only
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            mounts.retain(|m| m["type"] != "bind");
        }
        Ok(spec)
    }

    async fn create(&self, id: &str, v2: bool) -> Result<()> {
        let img = if v2 { &self.v2 } else { &self.v1 };
        let spec = self.spec(id, img)?;
        self.rt
            .create_and_start(&RawContainer {
                id,
                image: &img.info.reference,
                chain_id: &img.chain_id,
                labels: HashMap::new(),
                spec: &spec,
                log_path: None,
                log_uri: None,
                stdio: Default::default(),
            })
            .await?;
        Ok(())
    }

    async fn stop_remove(&self, id: &str) -> Result<()> {
        self.rt
            .stop_container(id, Duration::from_secs(GRACE as u64))
            .await?;
        self.rt.remove_container(id).await?;
        Ok(())
    }
}

// ------------------------------------------------------------------------------------ the API

fn daemonset(name: &str, image: &str, node_selector: Option<Value>) -> Result<DaemonSet> {
    let mut spec = json!({
        "terminationGracePeriodSeconds": GRACE,
        "containers": [{"name": "c", "image": image}],
    });
    if let Some(sel) = node_selector {
        spec["nodeSelector"] = sel;
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }))?)
}

/// A connection to the server, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// How the bench's raw HTTP clients reach the server: HTTPS verified against its CA, or plain
/// HTTP on its loopback `--insecure-listen`; with the admin token either way.
struct Wire {
    addr: String,
    tls: Option<tokio_rustls::TlsConnector>,
    token: String,
}

impl Wire {
    /// From the admin kubeconfig the server wrote (its CA and token); `plain`: the address of
    /// the plain HTTP listener to use instead of HTTPS.
    fn new(addr: &str, kubeconfig: &Path, plain: bool) -> Result<Wire> {
        use base64::Engine as _;
        let v: Value = serde_yaml::from_str(&std::fs::read_to_string(kubeconfig)?)?;
        let token = v["users"][0]["user"]["token"]
            .as_str()
            .ok_or_else(|| anyhow!("no token in {}", kubeconfig.display()))?
            .to_string();
        let ca = base64::engine::general_purpose::STANDARD.decode(
            v["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .ok_or_else(|| anyhow!("no CA in {}", kubeconfig.display()))?,
        )?;
        let tls = if plain {
            None
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for c in daemonset_agent::pki::certs_from_pem(&ca)? {
                roots.add(c)?;
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        };
        Ok(Wire {
            addr: addr.to_string(),
            tls,
            token,
        })
    }

    async fn connect(&self) -> Result<Box<dyn Io>> {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(c) => {
                let ip: std::net::SocketAddr = self.addr.parse()?;
                let name = rustls::pki_types::ServerName::from(ip.ip());
                Ok(Box::new(c.connect(name, tcp).await?))
            }
        }
    }

    /// A GET request's head with the token and `extra` header lines.
    fn get(&self, path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n{extra}\r\n",
            self.addr, self.token
        )
    }
}

async fn http_get(wire: &Wire, path: &str) -> Result<(u16, String)> {
    let addr = &wire.addr;
    let mut s = wire.connect().await?;
    s.write_all(wire.get(path, "Connection: close\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    // a TLS peer that closes without close_notify ends the read with an error after the data
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await?;
    if buf.is_empty() {
        read?;
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP status from {addr}{path}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Ok((code, body))
}

// ------------------------------------------------------------------------------------ the bench

struct Bench {
    o: Opts,
    sz: Sizes,
    image_v1: String,
    image_v2: String,
    floor: Floor,
    agent_rt: ContainerdRuntime,
    ev: Events,
    api: Api<DaemonSet>,
    wire: Arc<Wire>,
    server: Proc,
    agent: Proc,
    report: Report,
}

async fn setup(o: Opts) -> Result<Bench> {
    let sz = if o.smoke {
        Sizes {
            latency_samples: 5,
            convergence: 10,
            footprint_window: Duration::from_secs(5),
            settle: Duration::from_secs(2),
            watchers: vec![100],
            network_samples: 3,
            churn_cycles: 20,
        }
    } else {
        Sizes {
            latency_samples: 50,
            convergence: 100,
            footprint_window: Duration::from_secs(60),
            settle: Duration::from_secs(10),
            watchers: vec![1000, 5000],
            network_samples: 20,
            churn_cycles: 200,
        }
    };
    let nofile = raise_nofile()?;
    eprintln!("[harness] open files limit {nofile}");
    let image_v1 = format!("{}/busybox:v1", o.registry);
    let image_v2 = format!("{}/busybox:v2", o.registry);
    let floor_ns = format!("{}-floor", o.tag);
    let agent_ns = format!("{}-agent", o.tag);

    let rt = ContainerdRuntime::connect(&o.socket, &floor_ns, &o.dir.join("floor")).await?;
    let ev = Events {
        rx: spawn_events(rt.client().clone()),
    };
    let v1 = rt.ensure(&image_v1).await?;
    let v2 = rt.ensure(&image_v2).await?;
    let floor = Floor { rt, v1, v2 };
    let agent_rt = ContainerdRuntime::connect(&o.socket, &agent_ns, &o.dir.join("agent")).await?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let data = o.dir.join("server");
    let mut server_args: Vec<String> = vec![
        "server".into(),
        "--data-dir".into(),
        data.to_string_lossy().into(),
        "--listen".into(),
        addr.clone(),
    ];
    let plain_addr = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    );
    if !o.tls {
        server_args.extend(["--insecure-listen".into(), plain_addr.clone()]);
    }
    let server = Proc::spawn(&o.bin, &server_args, &o.dir.join("server.log"), "server")?;
    let admin_kubeconfig = data.join("admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(30);
    let wire = loop {
        if admin_kubeconfig.exists() {
            let wire = match o.tls {
                true => Wire::new(&addr, &admin_kubeconfig, false),
                false => Wire::new(&plain_addr, &admin_kubeconfig, true),
            };
            if let Ok(wire) = wire {
                if matches!(http_get(&wire, "/readyz").await, Ok((200, _))) {
                    break Arc::new(wire);
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the server did not answer /readyz in 30 s (log: {}/server.log)",
                o.dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // the agent and the kube client: the admin kubeconfig, or the same token over plain HTTP
    let kubeconfig = if o.tls {
        admin_kubeconfig.clone()
    } else {
        let text = std::fs::read_to_string(&admin_kubeconfig)?.replace(
            &format!("server: https://{addr}"),
            &format!("server: http://{plain_addr}"),
        );
        let plain = o.dir.join("plain.kubeconfig");
        daemonset_agent::pki::write_private(&plain, text.as_bytes())?;
        plain
    };
    eprintln!(
        "[harness] transport: {}",
        if o.tls { "TLS" } else { "plain HTTP" }
    );
    // DSA_BENCH_AGENT_WRAP="heaptrack -o /tmp/agent": run the agent under a profiler (its
    // footprint rows then measure the wrapper, not the agent)
    let wrap: Vec<String> = std::env::var("DSA_BENCH_AGENT_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let (agent_exe, mut agent_args) = match wrap.split_first() {
        Some((exe, rest)) => {
            let mut a = rest.to_vec();
            a.push(o.bin.to_string_lossy().into());
            (PathBuf::from(exe), a)
        }
        None => (o.bin.clone(), Vec::new()),
    };
    // the agent's pod network: a configuration directory of the run's own, empty (pods get
    // loopback only, as before a network plugin is installed) until the network section
    // writes the run's network into it
    let agent_config = o.dir.join("agent.toml");
    std::fs::create_dir_all(o.dir.join("cni-conf"))?;
    std::fs::write(
        &agent_config,
        format!(
            "cni-conf-dir = \"{}\"\ncni-bin-dir = \"/usr/lib/cni\"\nnode-api-listen = \"127.0.0.1:{}\"\n",
            o.dir.join("cni-conf").display(),
            std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
        ),
    )?;
    agent_args.extend([
        "agent".into(),
        "--config".into(),
        agent_config.to_string_lossy().into(),
        "--node-name".into(),
        NODE.into(),
        "--kubeconfig".into(),
        kubeconfig.to_string_lossy().into(),
        "--containerd-socket".into(),
        o.socket.to_string_lossy().into(),
        "--containerd-namespace".into(),
        agent_ns.clone(),
        "--state-dir".into(),
        o.dir.join("agent").to_string_lossy().into(),
    ]);
    let agent = Proc::spawn(&agent_exe, &agent_args, &o.dir.join("agent.log"), "agent")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(
        http_get(&wire, &format!("/api/v1/nodes/{NODE}")).await,
        Ok((200, _))
    ) {
        if Instant::now() > deadline {
            bail!(
                "the agent did not register its node in 30 s (log: {}/agent.log)",
                o.dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    let api: Api<DaemonSet> = Api::namespaced(client, "default");
    Ok(Bench {
        o,
        sz,
        image_v1,
        image_v2,
        floor,
        agent_rt,
        ev,
        api,
        wire,
        server,
        agent,
        report: Report::default(),
    })
}

impl Bench {
    fn agent_ns(&self) -> String {
        self.agent_rt.namespace().to_string()
    }

    fn floor_ns(&self) -> String {
        self.floor.rt.namespace().to_string()
    }

    fn check_procs(&mut self) -> Result<()> {
        self.server.check()?;
        self.agent.check()
    }

    /// Creates a DaemonSet and returns when its container's task started (the event).
    async fn ds_running(&mut self, name: &str, image: &str) -> Result<(Duration, String)> {
        let ds = daemonset(name, image, None)?;
        self.running(name, ds).await
    }

    /// Creates `ds` (named `name`) and returns when its container's task started.
    async fn running(&mut self, name: &str, ds: DaemonSet) -> Result<(Duration, String)> {
        let ns = self.agent_ns();
        let t0 = Instant::now();
        self.api.create(&PostParams::default(), &ds).await?;
        let n = name.to_string();
        let ev = self
            .ev
            .wait(
                &format!("daemonset {name} running"),
                Duration::from_secs(60),
                |e| e.topic == Topic::Start && e.ns == ns && ds_of(&e.id) == Some(n.as_str()),
            )
            .await?;
        Ok((ev.at - t0, ev.id))
    }

    async fn floor_running(&mut self, id: &str) -> Result<Duration> {
        let ns = self.floor_ns();
        let t0 = Instant::now();
        self.floor.create(id, false).await?;
        let ev = self
            .ev
            .wait(
                &format!("floor container {id} running"),
                Duration::from_secs(30),
                |e| e.topic == Topic::Start && e.ns == ns && e.id == id,
            )
            .await?;
        Ok(ev.at - t0)
    }

    /// Waits until the agent's namespace holds no containers.
    async fn agent_empty(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.agent_rt.list_containers().await?.len();
            if n == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{n} agent containers still present after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn delete_all(&mut self, names: &[String]) -> Result<()> {
        let (api, dp) = (&self.api, DeleteParams::default());
        for r in join_all(names.iter().map(|n| api.delete(n, &dp))).await {
            r?;
        }
        Ok(())
    }

    async fn floor_remove_all(&self) -> Result<()> {
        let ids: Vec<String> = self
            .floor
            .rt
            .list_containers()
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        for r in join_all(ids.iter().map(|id| self.floor.stop_remove(id))).await {
            r?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- 1. latency

    async fn latency(&mut self) -> Result<()> {
        eprintln!("[harness] latency: warm-up");
        // the subscription is live once the first event arrives
        self.floor_running("floor-warm").await?;
        let img1 = self.image_v1.clone();
        let img2 = self.image_v2.clone();
        self.ds_running("warm-a", &img1).await?;
        // the v2 image too, so that the update phase pulls nothing
        self.ds_running("warm-b", &img2).await?;
        let n = self.sz.latency_samples;
        eprintln!("[harness] latency: {n} samples, interleaved with the floor");
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        let budget = Instant::now() + Duration::from_secs(60 + 10 * n as u64);
        for i in 0..n {
            if Instant::now() > budget {
                bail!("latency phase over its time budget after {i} samples");
            }
            floor.push(ms(self.floor_running(&format!("floor-lat-{i:03}")).await?));
            ours.push(ms(self.ds_running(&format!("lat-{i:03}"), &img1).await?.0));
            self.check_procs()?;
        }
        let fp50 = pct(&floor, 50.0);
        let fp99 = pct(&floor, 99.0);
        let r = &mut self.report;
        r.row("apply->running ms p50/p95/p99", p3(&ours), p3(&floor), None);
        let x = pct(&ours, 50.0) / fp50;
        r.row(
            "  latency p50 / floor p50",
            format!("{:.0}", pct(&ours, 50.0)),
            format!("{fp50:.0}"),
            Some(x),
        )
        .target("<= 1.5", x <= 1.5);
        let x = pct(&ours, 99.0) / fp99;
        r.row(
            "  latency p99 / floor p99",
            format!("{:.0}", pct(&ours, 99.0)),
            format!("{fp99:.0}"),
            Some(x),
        )
        .target("<= 2", x <= 2.0);
        r.json.insert(
            "latency".into(),
            json!({"ours_ms": ours, "floor_ms": floor}),
        );
        eprintln!("[harness] latency: cleaning up");
        let mut names: Vec<String> = (0..n).map(|i| format!("lat-{i:03}")).collect();
        names.push("warm-a".into());
        names.push("warm-b".into());
        self.delete_all(&names).await?;
        self.floor_remove_all().await?;
        self.agent_empty(Duration::from_secs(120)).await
    }

    // ---------------------------------------------------------------- 3 + 4. convergence, footprint

    /// Waits until every id in `starts` started and every id in `deletes` was deleted (events of
    /// namespace `ns`; `starts` holds container ids, or DaemonSet names when `by_ds`). Returns
    /// the started container id of each.
    #[allow(clippy::too_many_arguments)]
    async fn wait_set(
        &mut self,
        what: &str,
        ns: &str,
        mut starts: HashSet<String>,
        by_ds: bool,
        exclude: &HashSet<String>,
        mut deletes: HashSet<String>,
        timeout: Duration,
    ) -> Result<(Instant, HashMap<String, String>)> {
        let deadline = Instant::now() + timeout;
        let mut started = HashMap::new();
        let mut last = Instant::now();
        while !starts.is_empty() || !deletes.is_empty() {
            let Some(ev) = self.ev.next(deadline).await? else {
                bail!(
                    "{what}: timed out after {timeout:?} with {} starts and {} deletes missing",
                    starts.len(),
                    deletes.len()
                );
            };
            if ev.ns != ns {
                continue;
            }
            match ev.topic {
                Topic::Start if !exclude.contains(&ev.id) => {
                    let key = if by_ds {
                        ds_of(&ev.id).unwrap_or_default().to_string()
                    } else {
                        ev.id.clone()
                    };
                    if starts.remove(&key) {
                        started.insert(key, ev.id);
                        last = ev.at;
                    }
                }
                Topic::Delete => {
                    if deletes.remove(&ev.id) {
                        last = ev.at;
                    }
                }
                Topic::Start => {}
            }
        }
        Ok((last, started))
    }

    async fn convergence(&mut self) -> Result<()> {
        let n = self.sz.convergence;
        let timeout = Duration::from_secs(300);
        let (fns, ans) = (self.floor_ns(), self.agent_ns());
        let none = HashSet::new();
        eprintln!("[harness] convergence: {n} containers");
        // floor: create
        let ids: Vec<String> = (0..n).map(|i| format!("floor-conv-{i:03}")).collect();
        let t0 = Instant::now();
        {
            let f = &self.floor;
            for r in join_all(ids.iter().map(|id| f.create(id, false))).await {
                r?;
            }
        }
        let set: HashSet<String> = ids.iter().cloned().collect();
        let (end, _) = self
            .wait_set(
                "floor create",
                &fns,
                set.clone(),
                false,
                &none,
                HashSet::new(),
                timeout,
            )
            .await?;
        let floor_create = end - t0;
        // ours: apply
        let names: Vec<String> = (0..n).map(|i| format!("conv-{i:03}")).collect();
        let dss: Vec<DaemonSet> = names
            .iter()
            .map(|nm| daemonset(nm, &self.image_v1, None))
            .collect::<Result<_>>()?;
        let t0 = Instant::now();
        {
            let api = &self.api;
            let pp = PostParams::default();
            for r in join_all(dss.iter().map(|d| api.create(&pp, d))).await {
                r?;
            }
        }
        let want: HashSet<String> = names.iter().cloned().collect();
        let (end, old_ids) = self
            .wait_set(
                "apply",
                &ans,
                want.clone(),
                true,
                &none,
                HashSet::new(),
                timeout,
            )
            .await?;
        let ours_create = end - t0;
        self.check_procs()?;

        // footprint with n pods
        tokio::time::sleep(self.sz.settle).await;
        eprintln!(
            "[harness] footprint: {n} pods, {:?}",
            self.sz.footprint_window
        );
        let (rss_busy, cpu_busy, anon_busy, file_busy) =
            footprint(self.agent.pid(), self.sz.footprint_window).await?;
        // beside the agent, per container: containerd's runc shim and our log driver
        let agent_state = self.o.dir.join("agent").to_string_lossy().to_string();
        let ns_arg = format!("-namespace {}", self.agent_ns());
        let (n_shims, shims_pss) = pss_of(&["containerd-shim", &ns_arg]);
        let (n_drivers, drivers_pss) = pss_of(&["log-driver", &agent_state]);

        // floor: replace (stop + remove + create of the new image)
        eprintln!("[harness] convergence: update");
        let new_ids: Vec<String> = (0..n).map(|i| format!("floor-conv2-{i:03}")).collect();
        let t0 = Instant::now();
        {
            let f = &self.floor;
            let jobs = ids.iter().zip(&new_ids).map(|(old, new)| async move {
                f.stop_remove(old).await?;
                f.create(new, true).await
            });
            for r in join_all(jobs).await {
                r?;
            }
        }
        let (end, _) = self
            .wait_set(
                "floor replace",
                &fns,
                new_ids.iter().cloned().collect(),
                false,
                &none,
                set,
                timeout,
            )
            .await?;
        let floor_update = end - t0;
        // ours: template update
        let t0 = Instant::now();
        {
            let api = &self.api;
            let pp = PatchParams::default();
            let patch = Patch::Merge(
                json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": self.image_v2}]}}}}),
            );
            for r in join_all(names.iter().map(|nm| api.patch(nm, &pp, &patch))).await {
                r?;
            }
        }
        let old: HashSet<String> = old_ids.values().cloned().collect();
        let (end, new_ours) = self
            .wait_set("update", &ans, want, true, &old, old.clone(), timeout)
            .await?;
        let ours_update = end - t0;
        self.check_procs()?;

        // floor: delete
        eprintln!("[harness] convergence: delete");
        let t0 = Instant::now();
        {
            let f = &self.floor;
            for r in join_all(new_ids.iter().map(|id| f.stop_remove(id))).await {
                r?;
            }
        }
        let (end, _) = self
            .wait_set(
                "floor delete",
                &fns,
                HashSet::new(),
                false,
                &none,
                new_ids.iter().cloned().collect(),
                timeout,
            )
            .await?;
        let floor_delete = end - t0;
        // ours: delete
        let t0 = Instant::now();
        self.delete_all(&names).await?;
        let gone: HashSet<String> = new_ours.values().cloned().collect();
        let (end, _) = self
            .wait_set("delete", &ans, HashSet::new(), false, &none, gone, timeout)
            .await?;
        let ours_delete = end - t0;
        self.agent_empty(Duration::from_secs(60)).await?;
        self.check_procs()?;

        let r = &mut self.report;
        for (what, ours, floor) in [
            ("apply", ours_create, floor_create),
            ("update", ours_update, floor_update),
            ("delete", ours_delete, floor_delete),
        ] {
            let x = ours.as_secs_f64() / floor.as_secs_f64();
            r.row(
                &format!("{n} DaemonSets: {what} s"),
                format!("{:.2}", ours.as_secs_f64()),
                format!("{:.2}", floor.as_secs_f64()),
                Some(x),
            )
            .target("<= 2", x <= 2.0);
        }
        r.row(
            &format!("agent RSS MiB, {n} pods"),
            format!("{rss_busy:.1}"),
            format!("anon {anon_busy:.1} file {file_busy:.1}"),
            None,
        )
        .target("<= 40", rss_busy <= 40.0);
        r.row(
            &format!("  beside it: {n_drivers} log drivers, PSS MiB"),
            format!("{drivers_pss:.1}"),
            format!("{n_shims} runc shims {shims_pss:.1}"),
            None,
        );
        r.row(
            &format!("agent CPU %, {n} pods"),
            format!("{cpu_busy:.2}"),
            String::new(),
            None,
        );
        r.json.insert(
            "convergence".into(),
            json!({"n": n,
                "ours_s": {"apply": ours_create.as_secs_f64(), "update": ours_update.as_secs_f64(), "delete": ours_delete.as_secs_f64()},
                "floor_s": {"apply": floor_create.as_secs_f64(), "update": floor_update.as_secs_f64(), "delete": floor_delete.as_secs_f64()}}),
        );
        r.json.insert(
            "footprint_busy".into(),
            json!({"pods": n, "window_s": self.sz.footprint_window.as_secs(), "rss_mib_max": rss_busy,
                "rss_anon_mib": anon_busy, "rss_file_mib": file_busy, "cpu_pct": cpu_busy,
                "log_drivers": n_drivers, "log_drivers_pss_mib": drivers_pss,
                "runc_shims": n_shims, "runc_shims_pss_mib": shims_pss}),
        );
        Ok(())
    }

    async fn idle_footprint(&mut self) -> Result<()> {
        tokio::time::sleep(self.sz.settle).await;
        eprintln!("[harness] footprint: idle, {:?}", self.sz.footprint_window);
        let (rss, cpu, anon, file) = footprint(self.agent.pid(), self.sz.footprint_window).await?;
        let r = &mut self.report;
        r.row(
            "agent RSS MiB, idle (0 pods)",
            format!("{rss:.1}"),
            format!("anon {anon:.1} file {file:.1}"),
            None,
        )
        .target("<= 20", rss <= 20.0);
        r.row(
            "agent CPU %, idle",
            format!("{cpu:.2}"),
            String::new(),
            None,
        )
        .target("<= 0.5", cpu <= 0.5);
        r.json.insert(
            "footprint_idle".into(),
            json!({"window_s": self.sz.footprint_window.as_secs(), "rss_mib_max": rss,
                "rss_anon_mib": anon, "rss_file_mib": file, "cpu_pct": cpu}),
        );
        Ok(())
    }

    // ---------------------------------------------------------------- 5. fan-out

    async fn fanout(&mut self, n: usize) -> Result<()> {
        // DSA_BENCH_PIN_FANOUT=1: the server on CPU 0, the watchers (this process) on CPU 1, in
        // the plain and the TLS run alike, so the latency shows the server's side alone and
        // the watchers' work (reading, TLS decryption) cannot take the server's core
        let pinned = std::env::var("DSA_BENCH_PIN_FANOUT").is_ok_and(|v| v == "1")
            // SAFETY: sysconf has no preconditions
            && unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } >= 2;
        eprintln!(
            "[harness] fan-out: {n} watchers{}",
            if pinned {
                " (server on CPU 0, watchers on CPU 1)"
            } else {
                ""
            }
        );
        if pinned {
            pin(self.server.pid(), Some(0))?;
            pin(std::process::id(), Some(1))?;
        }
        let res = self.fanout_round(n, pinned).await;
        if pinned {
            pin(self.server.pid(), None)?;
            pin(std::process::id(), None)?;
        }
        res
    }

    async fn fanout_round(&mut self, n: usize, pinned: bool) -> Result<()> {
        let (code, body) = http_get(&self.wire, "/apis/apps/v1/daemonsets").await?;
        if code != 200 {
            bail!("list daemonsets: HTTP {code}");
        }
        let list: Value = serde_json::from_str(&body).context("list daemonsets")?;
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .ok_or_else(|| anyhow!("list without resourceVersion"))?
            .to_string();
        let name = format!("fan-{n}");
        let needle: Arc<Vec<u8>> = Arc::new(format!("\"name\":\"{name}\"").into_bytes());
        let path = Arc::new(format!(
            "/apis/apps/v1/daemonsets?watch=true&resourceVersion={rv}&timeoutSeconds=600"
        ));
        let ready = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let sem = Arc::new(tokio::sync::Semaphore::new(200));
        let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
        let srv = self.server.pid();
        let rss0 = rss_kib(srv).unwrap_or(0) as f64 / 1024.0;
        let ns0 = cpu_ns(srv).unwrap_or(0);
        let t_connect = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let (wire, path, needle) = (self.wire.clone(), path.clone(), needle.clone());
            let (ready, failed, sem, tx) = (ready.clone(), failed.clone(), sem.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let r = watcher(&wire, &path, &needle, &ready, &sem).await;
                match r {
                    Ok(at) => {
                        let _ = tx.send(at);
                    }
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("[harness] watcher failed: {e:#}");
                        }
                    }
                }
            }));
        }
        drop(tx);
        let abort = |tasks: &Vec<tokio::task::JoinHandle<()>>| tasks.iter().for_each(|t| t.abort());
        let deadline = Instant::now() + Duration::from_secs(120);
        while ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n {
            if Instant::now() > deadline {
                abort(&tasks);
                bail!(
                    "fan-out: only {} of {n} watchers connected in 120 s",
                    ready.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let connect_s = t_connect.elapsed().as_secs_f64();
        if failed.load(Ordering::Relaxed) > 0 {
            abort(&tasks);
            bail!(
                "fan-out: {} of {n} watchers failed",
                failed.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_conn = rss_kib(srv).unwrap_or(0) as f64 / 1024.0;
        let (ns1, own_ns1) = (
            cpu_ns(srv).unwrap_or(0),
            cpu_ns(std::process::id()).unwrap_or(0),
        );
        let w1 = io_writes(srv).unwrap_or_default();
        // a DaemonSet no node runs: only the watch events matter here
        let ds = daemonset(&name, &self.image_v1, Some(json!({"bench": "none"})))?;
        let t0 = Instant::now();
        self.api.create(&PostParams::default(), &ds).await?;
        let mut lat = Vec::with_capacity(n);
        let deadline = Instant::now() + Duration::from_secs(60);
        while lat.len() < n {
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Some(at)) => lat.push(ms(at - t0)),
                Ok(None) => break,
                Err(_) => break,
            }
        }
        let t_all = t0.elapsed().as_secs_f64();
        let own_ns2 = cpu_ns(std::process::id()).unwrap_or(0);
        // The DaemonSet controller's status write follows the create: its MODIFIED goes to
        // every watcher too, sometimes inside the latency window and sometimes after it. So the
        // server's cost is taken once its writes settle, and divided by the events it sent.
        let settle_by = Instant::now() + Duration::from_secs(5);
        let mut last = io_writes(srv).unwrap_or_default();
        while Instant::now() < settle_by {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = io_writes(srv).unwrap_or_default();
            if now.0.saturating_sub(last.0) < (n as u64 / 100).max(1) {
                break;
            }
            last = now;
        }
        let ns2 = cpu_ns(srv).unwrap_or(0);
        let w2 = io_writes(srv).unwrap_or_default();
        let events = self.watch_events_of(&rv, &needle).await.unwrap_or(1).max(1);
        let rss_after = rss_kib(srv).unwrap_or(0) as f64 / 1024.0;
        abort(&tasks);
        self.api.delete(&name, &DeleteParams::default()).await?;
        if lat.len() < n {
            bail!(
                "fan-out: only {} of {n} watchers saw the ADDED event within 60 s",
                lat.len()
            );
        }
        let cpu_connect = ns1.saturating_sub(ns0) as f64 / 1e9;
        // the server's CPU from the create until its writes settled, for `events` events
        let cpu_event = ns2.saturating_sub(ns1) as f64 / 1e9;
        // the watchers' side (reading, and decrypting over TLS) shares the machine's cores:
        // their CPU from the create to the last ADDED (each reads up to its ADDED)
        let cpu_client = own_ns2.saturating_sub(own_ns1) as f64 / 1e9;
        // what one event cost each side per watcher: plain vs TLS gives the cost of TLS on each
        let srv_us = cpu_event * 1e6 / n as f64 / events as f64;
        let cli_us = cpu_client * 1e6 / n as f64;
        // what one event cost the server on the wire per watcher: write syscalls and bytes
        // (over TLS the bytes tell the records: each adds 22 to the plain chunk)
        let writes = (w2.0.saturating_sub(w1.0)) as f64 / n as f64;
        let bytes = (w2.1.saturating_sub(w1.1)) as f64 / n as f64;
        let rss = rss_conn.max(rss_after);
        let r = &mut self.report;
        let row = r.row(
            &format!("fan-out {n} watchers ms p50/p99"),
            format!("{:.0}/{:.0}", pct(&lat, 50.0), pct(&lat, 99.0)),
            String::new(),
            None,
        );
        if n >= 5000 {
            row.target("p99 <= 1000", pct(&lat, 99.0) <= 1000.0);
        }
        let row = r.row(
            &format!("  server RSS MiB, {n} watchers"),
            format!("{rss:.1}"),
            format!("{rss0:.1} before"),
            None,
        );
        if n >= 5000 {
            row.target("<= 300", rss <= 300.0);
        }
        r.row(
            "  server CPU s connect / event",
            format!("{cpu_connect:.2} / {cpu_event:.3}"),
            format!("{cpu_client:.3} watchers"),
            None,
        );
        r.row(
            "  CPU us per watcher per event: server / watchers",
            format!("{srv_us:.1} / {cli_us:.1}"),
            match pinned {
                true => "pinned: server CPU 0, watchers CPU 1".into(),
                false => "not pinned (DSA_BENCH_PIN_FANOUT=1 pins)".into(),
            },
            None,
        );
        r.row(
            "  server writes / bytes per watcher",
            format!("{writes:.2} / {bytes:.0}"),
            format!("{events} events"),
            None,
        );
        let fan = r.json.entry("fanout").or_insert_with(|| json!({}));
        fan[n.to_string()] = json!({"latency_ms": lat, "connect_s": connect_s, "server_rss_mib_before": rss0,
            "server_rss_mib": rss, "server_cpu_s_connect": cpu_connect, "server_cpu_s_event": cpu_event,
            "watchers_cpu_s_event": cpu_client, "server_writes_per_watcher": writes,
            "server_bytes_per_watcher": bytes, "event_window_s": t_all,
            "server_cpu_us_per_watcher": srv_us, "watchers_cpu_us_per_watcher": cli_us,
            "events": events, "pinned": pinned});
        // let the server notice the closed connections before the next round
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    }

    /// How many watch events the DaemonSets matching `needle` had after `rv`: a watch from
    /// `rv` replays them (and ends after a second).
    async fn watch_events_of(&self, rv: &str, needle: &[u8]) -> Result<usize> {
        let path =
            format!("/apis/apps/v1/daemonsets?watch=true&resourceVersion={rv}&timeoutSeconds=1");
        let (code, body) = http_get(&self.wire, &path).await?;
        if code != 200 {
            bail!("watch daemonsets: HTTP {code}");
        }
        let needle = String::from_utf8_lossy(needle);
        Ok(body
            .lines()
            .filter(|l| l.contains(&*needle) && l.contains("\"type\":"))
            .count())
    }

    // ---------------------------------------------------------------- 2. peers

    fn peers(&mut self) -> Result<()> {
        let Some(path) = self.o.peers_json.clone() else {
            self.report
                .row("peers", "not run".into(), String::new(), None);
            return Ok(());
        };
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("parse {}", path.display()))?;
        let lat = self
            .report
            .json
            .get("latency")
            .cloned()
            .unwrap_or(Value::Null);
        let samples = |v: &Value| -> Vec<f64> {
            v.as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        let floor = pct(&samples(&lat["floor_ms"]), 50.0);
        let ours = pct(&samples(&lat["ours_ms"]), 50.0);
        for peer in ["ctr_run", "docker_run", "swarm_global"] {
            let xs = samples(&doc[peer]);
            if xs.is_empty() {
                bail!("{}: no samples of {peer}", path.display());
            }
            let p50 = pct(&xs, 50.0);
            self.report.row(
                &format!("peer {peer} ms p50/p95/p99"),
                p3(&xs),
                format!("{floor:.0}"),
                Some(p50 / floor),
            );
        }
        let swarm = pct(&samples(&doc["swarm_global"]), 50.0);
        let x = swarm / ours;
        self.report
            .row(
                "swarm p50 / ours p50",
                format!("{swarm:.0}"),
                format!("{ours:.0} ours"),
                Some(x),
            )
            .target(">= 3", x >= 3.0);
        self.report.json.insert("peers".into(), doc);
        Ok(())
    }
}

/// One watch client: connects, reads the response headers (then it counts as ready), decodes
/// the chunked body and returns when it sees the ADDED event of the DaemonSet named by `needle`.
/// Concurrent lanes of the churn (pods at once on the node).
const CHURN_LANES: usize = 4;

impl Bench {
    // ---------------------------------------------------------------- 6. the pod network

    /// The CNI setup cost (apply->running of a pod with its own network against a hostNetwork
    /// pod, interleaved) and churn throughput (pods with their own network created and deleted
    /// per second through the runtime, against raw containerd create+start / stop+delete).
    async fn network(&mut self) -> Result<()> {
        // the run's network: bridge and network named by the run's tag (run.sh removes both)
        let pid = std::process::id();
        let subnet = format!("10.{}.{}.0/24", 240 + (pid >> 8) % 10, pid % 256);
        let conf = json!({"cniVersion": "1.0.0", "name": self.o.tag, "plugins": [
            {"type": "bridge", "bridge": self.o.tag, "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                      "dataDir": self.o.dir.join("cni-ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}}]});
        let conf_dir = self.o.dir.join("cni-conf");
        std::fs::write(
            conf_dir.join("10-bench.conflist"),
            serde_json::to_vec_pretty(&conf)?,
        )?;
        let img = self.image_v1.clone();
        let ds = |name: &str, host_network: bool| -> Result<DaemonSet> {
            let mut ds = daemonset(name, &img, None)?;
            if let Some(spec) = ds.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
                spec.host_network = Some(host_network);
            }
            Ok(ds)
        };
        eprintln!("[harness] network: warm-up");
        self.running("net-warm-cni", ds("net-warm-cni", false)?)
            .await?;
        self.running("net-warm-host", ds("net-warm-host", true)?)
            .await?;
        let n = self.sz.network_samples;
        eprintln!("[harness] network: {n} CNI and {n} hostNetwork pods, interleaved");
        let (mut cni, mut host) = (Vec::new(), Vec::new());
        let mut names = vec!["net-warm-cni".to_string(), "net-warm-host".to_string()];
        for i in 0..n {
            let name = format!("net-cni-{i:03}");
            cni.push(ms(self.running(&name, ds(&name, false)?).await?.0));
            names.push(name);
            let name = format!("net-host-{i:03}");
            host.push(ms(self.running(&name, ds(&name, true)?).await?.0));
            names.push(name);
            self.check_procs()?;
        }
        self.delete_all(&names).await?;
        self.agent_empty(Duration::from_secs(120)).await?;
        let x = pct(&cni, 50.0) / pct(&host, 50.0);
        let r = &mut self.report;
        r.row(
            "apply->running CNI pod ms p50/p95/p99",
            p3(&cni),
            p3(&host),
            None,
        );
        r.row(
            "  CNI pod p50 / hostNetwork pod p50",
            format!("{:.0}", pct(&cni, 50.0)),
            format!("{:.0}", pct(&host, 50.0)),
            Some(x),
        )
        .target("reported", true);

        // churn through the runtime (as the agent's workers drive it), in a namespace of its own
        let churn_rt = ContainerdRuntime::connect(
            &self.o.socket,
            &format!("{}-churn", self.o.tag),
            &self.o.dir.join("churn"),
        )
        .await?
        .with_network(&conf_dir, &[PathBuf::from("/usr/lib/cni")]);
        let image = churn_rt.ensure_image(&self.image_v1).await?;
        let cycles = self.sz.churn_cycles;
        let per_lane = cycles.div_ceil(CHURN_LANES);
        eprintln!("[harness] network: churn of {cycles} CNI pods, {CHURN_LANES} at a time");
        let t0 = Instant::now();
        let lanes = (0..CHURN_LANES).map(|lane| {
            let (rt, image, dir) = (&churn_rt, &image, &self.o.dir);
            async move {
                for i in 0..per_lane {
                    churn_once(rt, image, dir, &format!("churn-{lane}-{i}")).await?;
                }
                anyhow::Ok(())
            }
        });
        for r in join_all(lanes).await {
            r?;
        }
        let ours = (per_lane * CHURN_LANES) as f64 / t0.elapsed().as_secs_f64();
        eprintln!("[harness] network: floor churn of {cycles} containers");
        let t0 = Instant::now();
        let lanes = (0..CHURN_LANES).map(|lane| {
            let floor = &self.floor;
            async move {
                for i in 0..per_lane {
                    let id = format!("floor-churn-{lane}-{i}");
                    floor.create(&id, false).await?;
                    floor.stop_remove(&id).await?;
                }
                anyhow::Ok(())
            }
        });
        for r in join_all(lanes).await {
            r?;
        }
        let floor = (per_lane * CHURN_LANES) as f64 / t0.elapsed().as_secs_f64();
        let x = ours / floor;
        let r = &mut self.report;
        r.row(
            "churn: CNI pods created+deleted /s",
            format!("{ours:.1}"),
            format!("{floor:.1}"),
            Some(x),
        )
        .target("reported", true);
        r.json.insert(
            "network".into(),
            json!({"cni_ms": cni, "host_network_ms": host, "churn_pods_per_s": ours,
                "floor_churn_per_s": floor, "churn_cycles": per_lane * CHURN_LANES}),
        );
        Ok(())
    }
}

/// One pod with its own network through the runtime: sandbox (netns, CNI ADD), container
/// created and started, stopped, removed, sandbox removed (CNI DEL).
async fn churn_once(
    rt: &ContainerdRuntime,
    image: &PulledImage,
    dir: &Path,
    uid: &str,
) -> Result<()> {
    let container = Container {
        name: "c".into(),
        image: Some(image.info.reference.clone()),
        ..Default::default()
    };
    let pod_spec = PodSpec {
        containers: vec![container.clone()],
        termination_grace_period_seconds: Some(GRACE),
        ..Default::default()
    };
    let sandbox = rt
        .create_sandbox(&PodSandbox {
            uid: uid.to_string(),
            namespace: "default".into(),
            name: uid.to_string(),
            ..Default::default()
        })
        .await?;
    let id = format!("{uid}_c");
    rt.run_container(&ContainerRequest {
        id: id.clone(),
        labels: Default::default(),
        pod_spec,
        container,
        image: image.clone(),
        sandbox,
        hostname: uid.to_string(),
        log_path: dir.join("churn-logs").join(format!("{id}.log")),
        pod: Default::default(),
    })
    .await?;
    rt.stop_container(&id, Duration::from_secs(GRACE as u64))
        .await?;
    rt.remove_container(&id).await?;
    rt.remove_sandbox(uid).await?;
    Ok(())
}

async fn watcher(
    wire: &Wire,
    path: &str,
    needle: &[u8],
    ready: &AtomicUsize,
    sem: &tokio::sync::Semaphore,
) -> Result<Instant> {
    let permit = sem.acquire().await?;
    let mut s = tokio::time::timeout(Duration::from_secs(30), wire.connect())
        .await
        .context("connect timed out")??;
    s.write_all(wire.get(path, "Accept: application/json\r\n").as_bytes())
        .await?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        let k = tokio::time::timeout(Duration::from_secs(30), s.read(&mut tmp))
            .await
            .context("response headers timed out")??;
        if k == 0 {
            bail!("connection closed before the response headers");
        }
        buf.extend_from_slice(&tmp[..k]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        bail!("watch: {}", head.lines().next().unwrap_or(""));
    }
    let chunked = head.contains("transfer-encoding: chunked");
    buf.drain(..head_end);
    ready.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    let mut body: Vec<u8> = Vec::new();
    loop {
        // move complete chunks of `buf` into `body`
        if chunked {
            while let Some(le) = find(&buf, b"\r\n") {
                let size_text = String::from_utf8_lossy(&buf[..le]);
                let size_text = size_text.split(';').next().unwrap_or("").trim().to_string();
                let size = usize::from_str_radix(&size_text, 16)
                    .with_context(|| format!("bad chunk size {size_text:?}"))?;
                if size == 0 {
                    bail!("watch ended before the event");
                }
                if buf.len() < le + 2 + size + 2 {
                    break;
                }
                body.extend_from_slice(&buf[le + 2..le + 2 + size]);
                buf.drain(..le + 2 + size + 2);
            }
        } else {
            body.append(&mut buf);
        }
        while let Some(nl) = body.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = body.drain(..=nl).collect();
            if find(&line, needle).is_some() {
                let at = Instant::now();
                if find(&line, b"\"type\":\"ADDED\"").is_none() {
                    bail!("first event of the new DaemonSet is not ADDED");
                }
                return Ok(at);
            }
        }
        let k = s.read(&mut tmp).await?;
        if k == 0 {
            bail!("watch connection closed before the event");
        }
        buf.extend_from_slice(&tmp[..k]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn run(o: Opts) -> Result<Report> {
    let json_out = o.json.clone();
    let smoke = o.smoke;
    let transport = if o.tls { "tls" } else { "plain" };
    let started = chrono::Utc::now().to_rfc3339();
    let t_start = Instant::now();
    let mut b = setup(o).await?;
    let res = async {
        let pid = b.agent.pid();
        let (rss, anon, file) = (
            rss_kib(pid).unwrap_or(0) as f64 / 1024.0,
            status_kib(pid, "RssAnon:").unwrap_or(0) as f64 / 1024.0,
            status_kib(pid, "RssFile:").unwrap_or(0) as f64 / 1024.0,
        );
        b.report.row(
            "agent RSS MiB at start (no work yet)",
            format!("{rss:.1}"),
            format!("anon {anon:.1} file {file:.1}"),
            None,
        );
        b.report.json.insert(
            "agent_at_start".into(),
            json!({"rss_mib": rss, "rss_anon_mib": anon, "rss_file_mib": file}),
        );
        if b.o.runs("latency") {
            b.latency().await?;
        }
        if b.o.runs("convergence") {
            b.convergence().await?;
        }
        if b.o.runs("idle") {
            b.idle_footprint().await?;
        }
        if b.o.runs("network") {
            b.network().await?;
        }
        if b.o.runs("fanout") {
            for n in b.sz.watchers.clone() {
                b.fanout(n).await?;
            }
        }
        if b.o.runs("rollout") {
            b.rollout().await?;
        }
        if b.o.runs("nodeapi") {
            b.nodeapi().await?;
        }
        if b.o.runs("rs") {
            b.replicasets().await?;
        }
        if b.o.runs("scale") {
            b.scale().await?;
        }
        if b.o.runs("soak") {
            b.soak().await?;
        }
        b.peers()?;
        b.check_procs()
    }
    .await;
    let mut report = std::mem::take(&mut b.report);
    report.json.insert(
        "meta".into(),
        json!({"started": started, "smoke": smoke, "transport": transport, "duration_s": t_start.elapsed().as_secs_f64(),
            "loadavg_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
            "ok": res.is_ok()}),
    );
    if let Some(p) = json_out {
        std::fs::write(
            &p,
            serde_json::to_string_pretty(&Value::Object(report.json.clone()))?,
        )
        .with_context(|| format!("write {}", p.display()))?;
    }
    drop(b);
    match res {
        Ok(()) => Ok(report),
        Err(e) => {
            report.print();
            Err(e)
        }
    }
}

fn main() -> std::process::ExitCode {
    let o = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("harness: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("harness: tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(o)) {
        Ok(report) => {
            report.print();
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harness: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
