//! Real parts for integration tests: a private containerd in a temporary directory, a real OCI
//! registry on loopback holding busybox-static images built by `tests/fixtures/make-image.py`, the
//! real kubectl and the official Python client.
//!
//! Nothing here skips: a missing `containerd`, `runc`, `docker-registry`, `skopeo`, kubectl or
//! Python client panics with what to install, because CI installs them and a silent skip would
//! hide a hole.
#![allow(dead_code)]

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
}

impl Containerd {
    pub fn start() -> Containerd {
        require("containerd");
        require("runc");
        let dir = tempfile::Builder::new()
            .prefix("dsa-ctd-")
            .tempdir_in("/tmp")
            .unwrap();
        let socket = dir.path().join("containerd.sock");
        let child = Containerd::spawn(dir.path(), &socket);
        Containerd { dir, socket, child }
    }

    fn spawn(dir: &Path, socket: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("containerd.log"))
            .unwrap();
        let child = Command::new("containerd")
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

    /// Stops containerd (SIGTERM, as `systemctl restart containerd` does) and starts it again on
    /// the same socket, root and state. The shims, and the containers under them, keep running.
    pub fn restart(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        let fresh = Containerd::spawn(self.dir.path(), &self.socket);
        self.child = fresh;
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // The runc shims outlive containerd: kill every shim started for this socket, and the
        // container processes under them, so that a failed test leaves nothing running.
        let sock = self.socket.to_string_lossy().to_string();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let pid: i32 = match e.file_name().to_string_lossy().parse() {
                    Ok(p) => p,
                    Err(_) => continue,
                };
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains("containerd-shim") && cmd.contains(&sock) {
                    let _ = Command::new("pkill")
                        .args(["-9", "-P", &pid.to_string()])
                        .status();
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let root = self.dir.path().to_string_lossy().to_string();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").arg("-l").arg(p).status();
            }
        }
    }
}

/// The loopback registry (`host:port`) with busybox:v1, busybox:v2, busybox:latest,
/// monitoring-agent:latest and kube-proxy:latest. Uses `DSA_TEST_REGISTRY` when the runner
/// started one already (as .ci/run does), else starts one for this test process.
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
        assert!(
            out.status.success(),
            "registry.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        addr
    })
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
    let mut pids = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if needles.iter().all(|n| cmd.contains(n)) {
                pids.push(pid);
            }
        }
    }
    pids
}
