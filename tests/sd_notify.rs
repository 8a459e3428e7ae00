//! The systemd notification protocol as a `Type=notify` unit with `WatchdogSec=` sees it: the real
//! binary (server, then agent on a real containerd) is given NOTIFY_SOCKET and WATCHDOG_USEC, and
//! the datagrams it sends are read from that socket: READY=1 once serving, STATUS=, WATCHDOG=1
//! pings well inside the watchdog period, STOPPING=1 on SIGTERM. (The booted-systemd packaging
//! tests exercise the same units end to end.)
mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_for, Containerd};

const BIN: &str = env!("CARGO_BIN_EXE_daemonset-agent");
/// 400 ms: the binary must ping at least every 400 ms, and does so every 100-200 ms.
const WATCHDOG_USEC: &str = "400000";

struct Notified {
    sock: UnixDatagram,
    seen: Vec<(Instant, String)>,
}

impl Notified {
    fn bind(dir: &std::path::Path) -> (Notified, std::path::PathBuf) {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        (Notified { sock, seen: vec![] }, path)
    }

    /// Reads datagrams for `d`.
    fn read_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                for line in msg.lines() {
                    self.seen.push((Instant::now(), line.to_string()));
                }
            }
        }
    }

    fn has(&self, prefix: &str) -> bool {
        self.seen.iter().any(|(_, l)| l.starts_with(prefix))
    }

    /// The longest gap between two WATCHDOG=1 pings, and how many there were.
    fn pings(&self) -> (usize, Duration) {
        let at: Vec<Instant> = self
            .seen
            .iter()
            .filter(|(_, l)| l == "WATCHDOG=1")
            .map(|(t, _)| *t)
            .collect();
        let gap = at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
        (at.len(), gap)
    }
}

fn spawn(args: &[&str], notify: &std::path::Path, log: &std::path::Path) -> Child {
    Command::new(BIN)
        .args(args)
        .env("NOTIFY_SOCKET", notify)
        .env("WATCHDOG_USEC", WATCHDOG_USEC)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .unwrap()
}

fn term(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

fn assert_pings(n: &Notified, what: &str) {
    let (count, gap) = n.pings();
    assert!(
        count >= 5,
        "{what}: only {count} WATCHDOG=1 in 2 s: {:?}",
        n.seen
    );
    assert!(
        gap < Duration::from_millis(400),
        "{what}: {gap:?} between two pings, over WatchdogSec"
    );
}

#[test]
fn server_and_agent_notify_ready_status_watchdog_and_stopping() {
    let ctd = Containerd::start();
    let dir = tempfile::Builder::new()
        .prefix("dsa-notify-")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("server");
    // dropped first: stops the server and agent and removes what they made, pass or fail
    let _guard = common::Guard::new().containerd(&ctd).dir(dir.path());
    let listen = format!("127.0.0.1:{}", common::free_port());

    // server
    let (mut sn, sock) = Notified::bind(&mkdir(dir.path().join("s")));
    let mut server = spawn(
        &[
            "server",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &sock,
        &dir.path().join("server.log"),
    );
    wait_for("the server's READY=1", Duration::from_secs(20), || {
        sn.read_for(Duration::from_millis(200));
        sn.has("READY=1").then_some(())
    });
    sn.seen.clear();
    sn.read_for(Duration::from_secs(2));
    assert_pings(&sn, "server");

    // agent, on the real containerd
    let (mut an, sock) = Notified::bind(&mkdir(dir.path().join("a")));
    let kubeconfig = data.join("admin.kubeconfig");
    let state = dir.path().join("agent");
    let mut agent = spawn(
        &[
            "agent",
            "--node-name",
            "notify-1",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--containerd-socket",
            ctd.socket.to_str().unwrap(),
            "--containerd-namespace",
            "ns-notify",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &sock,
        &dir.path().join("agent.log"),
    );
    wait_for("the agent's READY=1", Duration::from_secs(30), || {
        an.read_for(Duration::from_millis(200));
        an.has("READY=1").then_some(())
    });
    an.read_for(Duration::from_secs(2));
    assert!(
        an.seen
            .iter()
            .any(|(_, l)| l.starts_with("STATUS=") && l.contains("pods")),
        "agent STATUS=: {:?}",
        an.seen
    );
    an.seen.clear();
    an.read_for(Duration::from_secs(2));
    assert_pings(&an, "agent");

    // SIGTERM: STOPPING=1, then a clean exit
    for (child, n, what) in [
        (&mut agent, &mut an, "agent"),
        (&mut server, &mut sn, "server"),
    ] {
        term(child);
        n.read_for(Duration::from_millis(300));
        let st = wait_for(
            &format!("the {what} to exit"),
            Duration::from_secs(30),
            || {
                n.read_for(Duration::from_millis(100));
                child.try_wait().unwrap()
            },
        );
        assert!(n.has("STOPPING=1"), "{what}: no STOPPING=1: {:?}", n.seen);
        assert!(st.success(), "{what} exited with {st}");
    }
}

fn mkdir(p: std::path::PathBuf) -> std::path::PathBuf {
    std::fs::create_dir_all(&p).unwrap();
    p
}
