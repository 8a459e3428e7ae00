//! Real parts for integration tests: a private containerd in a temporary directory, a real OCI
//! registry on loopback holding busybox-static images built by `tests/fixtures/make-image.py`, the
//! real kubectl and the official Python client, and the [`Guard`] that removes what a test made.
//!
//! Nothing here skips: a missing `containerd`, `runc`, `docker-registry`, `skopeo`, kubectl or
//! Python client panics with what to install, because CI installs them and a silent skip would
//! hide a hole.
#![allow(dead_code)]

pub mod api;
pub mod authreg;
pub mod etcd;
pub mod fleet;
pub mod netns;
pub mod proc;
pub mod tcpproxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn require(bin: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{bin} is not installed: run scripts/install-deps.sh (as root; it installs containerd, runc, docker-registry, skopeo, busybox-static ...)"
    );
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A containerd daemon of the test's own, in a temporary directory.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Child,
    /// `nsenter ...` when it runs in a mount namespace of the test's own.
    prefix: Vec<String>,
}

impl Containerd {
    pub fn start() -> Containerd {
        Containerd::start_in(None)
    }

    /// A containerd in `ns` (its mounts, and its shims' and containers', live there).
    pub fn start_in(ns: Option<&MountNs>) -> Containerd {
        require("containerd");
        require("runc");
        let dir = tempfile::Builder::new()
            .prefix("dsa-ctd-")
            .tempdir_in("/tmp")
            .unwrap();
        let socket = dir.path().join("containerd.sock");
        let prefix = ns.map(MountNs::enter).unwrap_or_default();
        let child = Containerd::spawn(dir.path(), &socket, &prefix);
        Containerd {
            dir,
            socket,
            child,
            prefix,
        }
    }

    fn spawn(dir: &Path, socket: &Path, prefix: &[String]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("containerd.log"))
            .unwrap();
        let (program, args) = match prefix.split_first() {
            Some((p, rest)) => (p.as_str(), [rest, &["containerd".to_string()]].concat()),
            None => ("containerd", vec![]),
        };
        let child = Command::new(program)
            .args(args)
            .arg("--address")
            .arg(socket)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "containerd did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // the socket appears slightly before the gRPC server answers
        std::thread::sleep(Duration::from_millis(200));
        child
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `ctr --address SOCKET -n NS ARGS`, which must succeed; its stdout.
    pub fn ctr_ok(&self, ns: &str, args: &[&str]) -> String {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", ns])
            .args(args)
            .output()
            .expect("run ctr");
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Stops containerd (SIGTERM, as `systemctl restart containerd` does) and starts it again on
    /// the same socket, root and state. The shims, and the containers under them, keep running.
    pub fn restart(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        let fresh = Containerd::spawn(self.dir.path(), &self.socket, &self.prefix);
        self.child = fresh;
    }

    /// kill -9 of containerd (its shims and containers keep running); [`Containerd::respawn`]
    /// starts it again.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts containerd again on the same socket, root and state after [`Containerd::crash`].
    pub fn respawn(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        self.child = Containerd::spawn(self.dir.path(), &self.socket, &self.prefix);
    }
}

impl Drop for Containerd {
    /// Stops this containerd only: its shims, tasks, mounts and cgroups are the [`Guard`]'s job,
    /// which runs before this drop (it also stops containerd; then this only reaps the child).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mount namespace of the test's own whose mounts are all shared (as systemd leaves a host's
/// `/`): a containerd and an agent started in it (`MountNs::enter`) see `mountPropagation`
/// behave as on such a host, and whatever they mount there goes when its last process does.
/// Its holder process names `dir`, so a [`Guard`] of `dir` ends it.
pub struct MountNs {
    holder: Child,
}

impl MountNs {
    pub fn new(dir: &Path) -> MountNs {
        require("unshare");
        require("nsenter");
        let holder = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "shared",
                "--",
                "sh",
                "-c",
                "exec sleep 86400",
            ])
            .arg(dir.join("mount-namespace"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare");
        let ns = MountNs { holder };
        let pid = ns.pid();
        wait_for("the mount namespace", Duration::from_secs(10), || {
            let mine = std::fs::read_link("/proc/self/ns/mnt").ok()?;
            let its = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?;
            // unshare has exec'd sleep in the new namespace
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            (mine != its && cmd.starts_with(b"sleep")).then_some(())
        });
        ns
    }

    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// The command prefix that runs a program in the namespace.
    pub fn enter(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            "-t".into(),
            self.pid().to_string(),
            "-m".into(),
            "--".into(),
        ]
    }

    /// Runs `args` in the namespace; its stdout, panicking on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid().to_string(), "-m", "--"])
            .args(args)
            .output()
            .expect("run nsenter");
        assert!(
            out.status.success(),
            "{args:?} in the mount namespace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The mount points of the namespace.
    pub fn mounts(&self) -> Vec<String> {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid()))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .collect()
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The loopback registry (`host:port`) with busybox:v1, busybox:v2, busybox:latest,
/// monitoring-agent:latest and kube-proxy:latest. Uses `DSA_TEST_REGISTRY` when the runner
/// started one already (as .ci/run does), else starts one for this test process, stopped and
/// removed when the process exits.
pub fn registry() -> &'static str {
    static REG: OnceLock<String> = OnceLock::new();
    REG.get_or_init(|| {
        if let Ok(addr) = std::env::var("DSA_TEST_REGISTRY") {
            if !addr.is_empty() {
                return addr;
            }
        }
        require("docker-registry");
        require("skopeo");
        require("python3");
        let dir = tempfile::Builder::new()
            .prefix("dsa-reg-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let out = Command::new("bash")
            .arg(repo_root().join("tests/fixtures/registry.sh"))
            .arg(&dir)
            .arg(&addr)
            .output()
            .expect("run registry.sh");
        let pid = std::fs::read_to_string(dir.join("registry.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        if OWN_REGISTRY.set((pid, dir)).is_ok() {
            // SAFETY: atexit only stores the address of a plain `extern "C" fn` without
            // arguments; the function touches nothing but the OnceLock set just above.
            unsafe { libc::atexit(stop_own_registry) };
        }
        assert!(
            out.status.success(),
            "registry.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        addr
    })
}

/// The registry [`registry`] started for this process: its pid and directory.
static OWN_REGISTRY: OnceLock<(Option<i32>, PathBuf)> = OnceLock::new();

/// Run at the test process's exit: a static is never dropped, so a [`Guard`] cannot do this.
extern "C" fn stop_own_registry() {
    if let Some((pid, dir)) = OWN_REGISTRY.get() {
        if let Some(pid) = pid {
            kill(*pid);
            wait_gone(&[*pid]);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// kubectl 1.27 or newer, as `scripts/find-kubectl.sh` finds it on the PATH: that script is the
/// one place that knows the minimum version and says what to install (Debian's own
/// kubernetes-client is 1.20, so being on the PATH is not enough).
pub fn kubectl() -> &'static Path {
    static KUBECTL: OnceLock<PathBuf> = OnceLock::new();
    KUBECTL.get_or_init(|| find_kubectl(None))
}

/// `kubectl.RELEASE` (e.g. "1.27"), on the PATH or beside the kubectl on the PATH.
pub fn kubectl_release(release: &str) -> PathBuf {
    find_kubectl(Some(release))
}

fn find_kubectl(release: Option<&str>) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/find-kubectl.sh"))
        .args(release)
        .output()
        .expect("run scripts/find-kubectl.sh");
    assert!(
        out.status.success(),
        "no usable kubectl{}:\n{}",
        release.map(|r| format!(" {r}")).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The Python that has the official client (`kubernetes`): the virtual environment that
/// `scripts/install-deps.sh` makes under target/ with Debian's python3-venv (Debian's Python
/// refuses system-wide pip installs, PEP 668).
pub fn python_client() -> PathBuf {
    let python = repo_root().join("target/venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import kubernetes"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{} cannot import the official client `kubernetes`: run scripts/install-deps.sh (as root; it makes that virtual environment with Debian's python3-venv and pip-installs kubernetes>=30 into it)",
        python.display()
    );
    python
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it returns Some, or panics after `timeout` naming `what`.
/// GET `path` of `addr` over HTTP/1.0, read until the peer closes (10 s at most).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = addr.parse().expect("an address");
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` every 50 ms until it returns Some, or returns None after `timeout` (for waits whose
/// running out is an outcome to report, not a failure of the test).
pub fn wait_for_opt<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A journald of the test's own: a namespace instance (`systemd-journald NAMESPACE`, no booted
/// systemd needed) listening on /run/systemd/journal.NAMESPACE/socket, read back with
/// `journalctl --namespace=NAMESPACE`. It never touches a journald the host may run; its socket
/// directory and journal files are removed on drop.
pub struct Journald {
    pub namespace: String,
    pub socket: PathBuf,
    child: Child,
    /// A namespace instance exits after 30 s without clients unless a stdout stream is open
    /// (journald-server.c: server_start_or_stop_idle_timer); under systemd socket activation
    /// would start it again, here nothing would. This stream keeps it up for the test.
    _keepalive: Option<std::os::unix::net::UnixStream>,
}

pub const JOURNALD: &str = "/lib/systemd/systemd-journald";

impl Journald {
    pub fn start() -> Journald {
        assert!(
            Path::new(JOURNALD).exists(),
            "{JOURNALD} is missing: run scripts/install-deps.sh (apt-get install -y systemd)"
        );
        require("journalctl");
        let namespace = format!("dsa-{}-{:08x}", std::process::id(), rand::random::<u32>());
        let socket = PathBuf::from(format!("/run/systemd/journal.{namespace}/socket"));
        let child = Command::new(JOURNALD)
            .arg(&namespace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn systemd-journald");
        let mut j = Journald {
            namespace,
            socket,
            child,
            _keepalive: None,
        };
        let stdout = j.socket.with_file_name("stdout");
        let mut keepalive = wait_for("journald's sockets", Duration::from_secs(20), || {
            if !j.socket.exists() {
                return None;
            }
            std::os::unix::net::UnixStream::connect(&stdout).ok()
        });
        // the stdout-stream header: identifier, unit, priority, level prefix, syslog, kmsg, console
        use std::io::Write as _;
        keepalive
            .write_all(b"dsa-test-keepalive\n\n6\n0\n0\n0\n0\n")
            .expect("journald stdout stream");
        j._keepalive = Some(keepalive);
        j
    }

    /// Every entry, as `journalctl --namespace=NS -o json --all` prints them (values of binary
    /// fields are arrays of bytes there: see [`field`]).
    pub fn entries(&self) -> Vec<serde_json::Value> {
        let out = Command::new("journalctl")
            .arg(format!("--namespace={}", self.namespace))
            .args(["-o", "json", "--all", "--no-pager"])
            .output()
            .expect("run journalctl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The entries whose `name` field is `value`.
    pub fn entries_where(&self, name: &str, value: &str) -> Vec<serde_json::Value> {
        self.entries()
            .into_iter()
            .filter(|e| e[name] == value)
            .collect()
    }
}

/// A field of a journalctl JSON entry as bytes (journalctl prints binary values as byte arrays).
pub fn field(entry: &serde_json::Value, name: &str) -> Option<Vec<u8>> {
    match &entry[name] {
        serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
        serde_json::Value::Array(a) => a.iter().map(|b| b.as_u64().map(|b| b as u8)).collect(),
        _ => None,
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let suffix = format!(".{}", self.namespace);
        let _ = std::fs::remove_dir_all(format!("/run/systemd/journal.{}", self.namespace));
        for dir in ["/var/log/journal", "/run/log/journal"] {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().ends_with(&suffix) {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
    }
}

/// Pids of processes whose command line contains every one of `needles`.
pub fn pids_with(needles: &[&str]) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, cmd)| needles.iter().all(|n| cmd.contains(n)))
        .map(|(pid, _)| pid)
        .collect()
}

/// Every live process but this one: (pid, command line with spaces between the arguments).
/// Zombies have an empty command line and are left out: they are gone but for their exit status.
fn processes() -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            (!cmd.is_empty()).then(|| (pid, String::from_utf8_lossy(&cmd).replace('\0', " ")))
        })
        .collect()
}

fn kill(pid: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn alive(pid: i32) -> bool {
    // a zombie's cmdline is empty: it has exited
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// Waits (at most 10 s) until none of `pids` is alive; says which are left otherwise.
fn wait_gone(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        if Instant::now() > deadline {
            let left: Vec<&i32> = pids.iter().filter(|p| alive(**p)).collect();
            eprintln!("guard: processes {left:?} still alive 10 s after SIGKILL");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Tears down, when dropped, everything a test made on the machine, whether it passed or failed
/// (a failing test's panic unwinds through it). Every integration test holds one; it must drop
/// before what it guards: declare it after them (locals drop in reverse order) or as the first
/// field of a struct (fields drop in order). In this order:
///
/// 1. every process whose command line names a guarded directory (the test's servers, agents and
///    log drivers), except containerd and its shims, which step 2 needs;
/// 2. every task in every namespace of the guarded containerds, killed and deleted through
///    containerd: runc then removes the container's cgroup, rootfs mount and state;
/// 3. containerd itself, and any shim still running for its socket with the processes under it;
/// 4. the mounts under the guarded directories (pods' network namespaces, rootfs), deepest first;
/// 5. the cgroups of those containerd namespaces (`/sys/fs/cgroup/*/daemonset-agent/NS`), and
///    what runc keeps of the guarded containerds' containers (not another containerd's of a
///    namespace of the same name);
/// 6. the guarded directories.
///
/// `.ci/run` counts what is left afterwards (`scripts/leftovers.sh`) and fails on any of it.
#[must_use = "a guard tears down when dropped: bind it to a variable or field"]
pub struct Guard {
    dirs: Vec<PathBuf>,
    containerds: Vec<(PathBuf, PathBuf)>,
    links: Vec<String>,
}

impl Guard {
    pub fn new() -> Guard {
        Guard {
            dirs: vec![],
            containerds: vec![],
            links: vec![],
        }
    }

    /// Also deletes the network interface `name` (a test's CNI bridge), last.
    pub fn link(mut self, name: &str) -> Guard {
        self.links.push(name.to_string());
        self
    }

    /// Also tears down `dir`: the processes naming it, the mounts under it and the directory.
    pub fn dir(mut self, dir: &Path) -> Guard {
        self.dirs.push(dir.to_path_buf());
        self
    }

    /// Also tears down `ctd`: its tasks, its namespaces' cgroups, the daemon and its shims, and
    /// its directory as [`Guard::dir`] does.
    pub fn containerd(mut self, ctd: &Containerd) -> Guard {
        self.containerds
            .push((ctd.socket.clone(), ctd.path().to_path_buf()));
        self.dir(ctd.path())
    }

    /// The processes whose command line names a guarded directory.
    fn naming_dirs(&self) -> Vec<(i32, String)> {
        let needles: Vec<String> = self
            .dirs
            .iter()
            .map(|d| format!("{}/", d.display()))
            .collect();
        processes()
            .into_iter()
            .filter(|(_, cmd)| needles.iter().any(|n| cmd.contains(n.as_str())))
            .collect()
    }

    /// Whether runc's state directory `dir` is of a container of a guarded containerd: runc
    /// records the bundle (`bundle=CTD_DIR/state/io.containerd.runtime.v2.task/NS/ID`) in its
    /// `state.json`.
    fn bundled_here(&self, dir: &Path) -> bool {
        let state = std::fs::read_to_string(dir.join("state.json")).unwrap_or_default();
        self.containerds
            .iter()
            .any(|(_, d)| state.contains(&format!("bundle={}/", d.display())))
    }

    /// The namespaces of a guarded containerd: those it lists, and those its task directories
    /// name (also when it no longer answers).
    fn namespaces(socket: &Path, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = ctr(socket, &["namespaces", "ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect();
        for tasks in ["state", "root"] {
            let d = dir.join(tasks).join("io.containerd.runtime.v2.task");
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                names.push(e.file_name().to_string_lossy().to_string());
            }
        }
        names.sort();
        names.dedup();
        names.retain(|n| !n.is_empty());
        names
    }
}

impl Default for Guard {
    fn default() -> Guard {
        Guard::new()
    }
}

/// `ctr --address SOCKET ARGS`, given 20 s; its stdout, empty when it failed.
fn ctr(socket: &Path, args: &[&str]) -> String {
    Command::new("timeout")
        .arg("20")
        .arg("ctr")
        .arg("--address")
        .arg(socket)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

/// Removes the cgroup directory `dir` and those under it, deepest first. A cgroup whose last
/// process is still exiting refuses rmdir (EBUSY) for a moment: retried for at most 5 s.
fn remove_cgroup(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&e.path());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("guard: cgroup {} left: {e}", dir.display());
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let is_containerd = |cmd: &str| {
            let argv0 = cmd.split(' ').next().unwrap_or("");
            let name = argv0.rsplit('/').next().unwrap_or("");
            name == "containerd" || name.starts_with("containerd-shim")
        };
        // 1. the test's own daemons: nothing may start containers again while step 2 runs
        let pids: Vec<i32> = self
            .naming_dirs()
            .into_iter()
            .filter(|(_, cmd)| !is_containerd(cmd))
            .map(|(pid, _)| pid)
            .collect();
        pids.iter().for_each(|p| kill(*p));
        wait_gone(&pids);

        // 2. tasks deleted through containerd
        let mut namespaces = vec![];
        for (socket, dir) in &self.containerds {
            for ns in Guard::namespaces(socket, dir) {
                for task in ctr(socket, &["-n", &ns, "tasks", "ls", "-q"]).lines() {
                    ctr(socket, &["-n", &ns, "tasks", "rm", "-f", task]);
                }
                namespaces.push(ns);
            }
        }

        // 3. containerd, and the shims that outlive it with the processes under them
        let left = self.naming_dirs();
        let shims: Vec<i32> = left
            .iter()
            .filter(|(_, cmd)| cmd.contains("containerd-shim"))
            .map(|(pid, _)| *pid)
            .collect();
        let mut pids: Vec<i32> = left.iter().map(|(pid, _)| *pid).collect();
        for pid in processes().into_iter().map(|(pid, _)| pid) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // the parent pid is the second field after the parenthesised command name
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid.is_some_and(|pp| shims.contains(&pp)) {
                pids.push(pid);
            }
        }
        pids.iter().for_each(|p| kill(*p));
        wait_gone(&pids);

        // 4. mounts under the directories, deepest first
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| {
                self.dirs.iter().any(|d| {
                    let d = d.to_string_lossy();
                    *p == d || p.starts_with(&format!("{d}/"))
                })
            })
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        // the host-local address reservations of the pods whose network namespaces go here: no
        // CNI DEL ran for a pod still up when its agent was killed, and the shared pool (the
        // default network's 254 addresses) would run out over many runs
        release_cni_reservations(points.iter().filter_map(|p| {
            let (dir, uid) = p.rsplit_once('/')?;
            dir.ends_with("/netns").then_some(uid)
        }));
        for p in points {
            // (a rootfs that went with its task is "not mounted": nothing to say)
            let _ = Command::new("umount")
                .arg("-l")
                .arg(p)
                .stderr(Stdio::null())
                .status();
        }

        // 5. the namespaces' cgroups (runc removed its containers' own when their tasks were
        // deleted; what a killed shim left, and the namespace level, go here), and runc's state
        // directory of each namespace once empty
        for ns in &namespaces {
            for controller in std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                remove_cgroup(&controller.path().join("daemonset-agent").join(ns));
            }
            // a container whose shim died with containerd mid-create/restart keeps its runc
            // state: runc deletes it (and kills what it still runs), as the shim would have
            let root = Path::new("/run/containerd/runc").join(ns);
            for c in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                // only a guarded containerd's: another containerd of the machine may use a
                // namespace of this name at the same time, and its containers are in `root` too
                if !self.bundled_here(&c.path()) {
                    continue;
                }
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force"])
                    .arg(c.file_name())
                    .stderr(Stdio::null())
                    .status();
                let _ = std::fs::remove_dir_all(c.path());
            }
            let _ = std::fs::remove_dir(&root);
        }

        // 6. the directories, and the test's network interfaces
        for l in &self.links {
            let _ = Command::new("ip")
                .args(["link", "del", l])
                .stderr(Stdio::null())
                .status();
        }
        for d in &self.dirs {
            if let Err(e) = std::fs::remove_dir_all(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("guard: {} left: {e}", d.display());
                }
            }
        }
    }
}

/// Removes the host-local IPAM reservations (`/var/lib/cni/networks/NET/IP`, whose first line is
/// the CNI container id: the pod's uid here) held by `uids`.
fn release_cni_reservations<'a>(uids: impl Iterator<Item = &'a str>) {
    let uids: std::collections::HashSet<&str> = uids.collect();
    if uids.is_empty() {
        return;
    }
    let nets = std::fs::read_dir("/var/lib/cni/networks")
        .into_iter()
        .flatten()
        .flatten();
    for net in nets {
        for entry in std::fs::read_dir(net.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if id.lines().next().is_some_and(|id| uids.contains(id.trim())) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
