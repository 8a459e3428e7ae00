//! Real etcd members on loopback ports with data directories of their own (Debian's
//! `etcd-server`; a missing `etcd` fails, it is not skipped), and `daemonset-agent server`
//! replicas on them.
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use super::api::Endpoint;
use super::proc::Proc;
use super::wait_for;

/// etcd members of one cluster, killed and their directories removed on drop.
pub struct Etcd {
    pub dir: tempfile::TempDir,
    pub members: Vec<Option<Child>>,
    pub clients: Vec<String>,
    peers: Vec<String>,
    cluster: String,
    token: String,
}

impl Etcd {
    pub fn start(n: usize) -> Etcd {
        super::require("etcd");
        let dir = tempfile::Builder::new()
            .prefix("dsa-etcd-")
            .tempdir_in("/tmp")
            .unwrap();
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| (super::free_port(), super::free_port()))
            .collect();
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut etcd = Etcd {
            dir,
            members: Vec::new(),
            clients: ports
                .iter()
                .map(|(c, _)| format!("http://127.0.0.1:{c}"))
                .collect(),
            peers: ports
                .iter()
                .map(|(_, p)| format!("http://127.0.0.1:{p}"))
                .collect(),
            cluster: cluster.join(","),
            token: format!("dsa-{}", std::process::id()),
        };
        for i in 0..n {
            let data = etcd.dir.path().join(format!("m{i}.etcd"));
            let child = etcd.spawn_member(i, &data);
            etcd.members.push(Some(child));
        }
        etcd.wait_healthy();
        etcd
    }

    fn spawn_member(&self, i: usize, data: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("m{i}.log")))
            .unwrap();
        Command::new("etcd")
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(data)
            .args(["--listen-client-urls", &self.clients[i]])
            .args(["--advertise-client-urls", &self.clients[i]])
            .args(["--listen-peer-urls", &self.peers[i]])
            .args(["--initial-advertise-peer-urls", &self.peers[i]])
            .args(["--initial-cluster", &self.cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian's etcd-server)")
    }

    fn wait_healthy(&self) {
        wait_for("etcd to have a leader", Duration::from_secs(30), || {
            self.ctl(&["endpoint", "health"]).ok().map(|_| ())
        });
    }

    /// `etcdctl snapshot save TO` from the first member alive.
    pub fn snapshot(&self, to: &Path) {
        let live = self
            .clients
            .iter()
            .zip(&self.members)
            .find(|(_, m)| m.is_some())
            .map(|(c, _)| c.clone())
            .expect("a member alive");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={live}"))
            .args(["snapshot", "save"])
            .arg(to)
            .output()
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl snapshot save: {out:?}");
    }

    /// Every member killed -9 and started again on a data directory restored from `snapshot`
    /// (`etcdctl snapshot restore`, as the etcd documentation does it): the cluster's revision
    /// goes back to the snapshot's.
    pub fn restore(&mut self, snapshot: &Path) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for i in 0..self.members.len() {
            let data = self.dir.path().join(format!("m{i}.restored"));
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["snapshot", "restore"])
                .arg(snapshot)
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(&data)
                .args(["--initial-cluster", &self.cluster])
                .args(["--initial-cluster-token", &self.token])
                .args(["--initial-advertise-peer-urls", &self.peers[i]])
                .output()
                .expect("run etcdctl");
            assert!(out.status.success(), "etcdctl snapshot restore: {out:?}");
            self.members[i] = Some(self.spawn_member(i, &data));
        }
        self.wait_healthy();
    }

    pub fn endpoints(&self) -> String {
        self.clients.join(",")
    }

    /// etcdctl against every member; its output, or its error output.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let live: Vec<&str> = self
            .clients
            .iter()
            .zip(&self.members)
            .filter(|(_, m)| m.is_some())
            .map(|(c, _)| c.as_str())
            .collect();
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", live.join(",")))
            .args(args)
            .output()
            .expect("run etcdctl");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The keys under `prefix` now (etcdctl, from a live member).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self
            .ctl(&["get", prefix, "--prefix", "--keys-only"])
            .unwrap_or_else(|e| panic!("etcdctl get {prefix}: {e}"));
        out.lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// The cluster's revision now.
    pub fn revision(&self) -> u64 {
        let out = self
            .ctl(&["endpoint", "status", "-w", "json"])
            .expect("etcdctl endpoint status");
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0]["Status"]["header"]["revision"].as_u64().unwrap()
    }

    pub fn compact(&self, revision: u64) {
        self.ctl(&["compact", &revision.to_string()])
            .expect("etcdctl compact");
    }

    /// kill -9 member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut m) = self.members[i].take() {
            let _ = m.kill();
            let _ = m.wait();
        }
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        for i in 0..self.members.len() {
            let text = std::fs::read_to_string(self.dir.path().join(format!("m{i}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            s += &format!(
                "--- etcd m{i} ---\n{}\n",
                lines[lines.len().saturating_sub(15)..].join("\n")
            );
        }
        s
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A `daemonset-agent server` on etcd.
pub struct Server {
    pub proc: Proc,
    pub data: PathBuf,
    pub addr: std::net::SocketAddr,
}

impl Server {
    /// A server on `etcd` with `dir/name` as its data directory, once it answers `/readyz`.
    /// Replicas share the CA and the admin token through etcd: a client of one is a client
    /// of every other.
    pub fn start(dir: &Path, name: &str, etcd: &Etcd, extra: &[&str]) -> Server {
        let s = Server::spawn(dir, name, etcd, extra);
        s.wait_ready(name);
        s
    }

    /// A server on `etcd`, started (not yet answering).
    pub fn spawn(dir: &Path, name: &str, etcd: &Etcd, extra: &[&str]) -> Server {
        let data = dir.join(name);
        let addr: std::net::SocketAddr =
            format!("127.0.0.1:{}", super::free_port()).parse().unwrap();
        let listen = addr.to_string();
        let endpoints = etcd.endpoints();
        let mut args = vec![
            "server",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
            "--datastore-endpoint",
            &endpoints,
        ];
        args.extend_from_slice(extra);
        let proc = Proc::spawn(&args, dir.join(format!("{name}.log")));
        Server { proc, data, addr }
    }

    /// Waits until the server answers `/readyz` with its admin kubeconfig written.
    pub fn wait_ready(&self, name: &str) {
        let s = self;
        wait_for(
            &format!("server {name} to answer"),
            Duration::from_secs(30),
            || {
                (s.data.join("admin.kubeconfig").exists()
                    && std::net::TcpStream::connect(s.addr).is_ok()
                    && s.api().get("/readyz").0 == 200)
                    .then_some(())
            },
        );
    }

    pub fn api(&self) -> Endpoint {
        Endpoint::admin(self.addr, &self.data)
    }
}

/// The body of `resp` as JSON, once its status is `want`.
pub fn ok(resp: (u16, String), want: u16) -> Value {
    assert_eq!(resp.0, want, "{}", resp.1);
    serde_json::from_str(&resp.1).unwrap_or(Value::Null)
}

/// An object's resourceVersion.
pub fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {obj}"))
}

/// The events of a watch of `path?query` from `from` (closed by the server after a second).
pub fn watch_events(api: &Endpoint, path: &str, query: &str, from: u64) -> (u16, Vec<Value>) {
    let (code, body) = api.get(&format!(
        "{path}?{query}&watch=1&resourceVersion={from}&timeoutSeconds=1"
    ));
    let events = body
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|e| e.get("type").is_some())
        .collect();
    (code, events)
}
