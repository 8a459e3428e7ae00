//! Server replicas on one etcd member of the test's own (loopback ports, its own data directory),
//! for tests of what clients do across replicas (`tests/failover.rs`). Included with `#[path]`
//! by the tests that use it.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::common::api::Endpoint;
use super::common::proc::Proc;
use super::common::{free_port, require, wait_for};

/// One etcd member, killed and its directory removed on drop.
pub struct Etcd {
    _dir: tempfile::TempDir,
    member: Child,
    pub endpoint: String,
}

impl Etcd {
    pub fn start() -> Etcd {
        require("etcd");
        let dir = tempfile::Builder::new()
            .prefix("dsa-etcd-")
            .tempdir_in("/tmp")
            .unwrap();
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let member = Command::new("etcd")
            .args(["--name", "m0"])
            .arg("--data-dir")
            .arg(dir.path().join("m0.etcd"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("m0={peer_url}")])
            .args(["--initial-cluster-state", "new"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian's etcd-server)");
        let etcd = Etcd {
            _dir: dir,
            member,
            endpoint: client_url,
        };
        wait_for("etcd to answer", Duration::from_secs(30), || {
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", etcd.endpoint))
                .args(["endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .ok()
                .filter(|s| s.success())
                .map(|_| ())
        });
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.member.kill();
        let _ = self.member.wait();
    }
}

/// A `daemonset-agent server` on an [`Etcd`].
pub struct Replica {
    pub name: String,
    proc: Option<Proc>,
    pub data: PathBuf,
    pub addr: std::net::SocketAddr,
}

impl Replica {
    /// Replica `name` under `dir` on `etcd` with `extra` flags (the replicas share their CA,
    /// signing key and admin token through etcd: `server::bootstrap`).
    pub fn start(dir: &Path, name: &str, etcd: &Etcd, extra: &[&str]) -> Replica {
        let data = dir.join(name);
        std::fs::create_dir_all(&data).unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listen = addr.to_string();
        let mut args = vec![
            "server",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
            "--datastore-endpoint",
            &etcd.endpoint,
        ];
        args.extend_from_slice(extra);
        let proc = Proc::spawn(&args, dir.join(format!("{name}.log")));
        let r = Replica {
            name: name.into(),
            proc: Some(proc),
            data,
            addr,
        };
        wait_for(
            &format!("server {name} to answer"),
            Duration::from_secs(30),
            || {
                (r.kubeconfig().exists()
                    && std::net::TcpStream::connect(r.addr).is_ok()
                    && r.api().try_get("/readyz").ok()?.0 == 200)
                    .then_some(())
            },
        );
        r
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data.join("admin.kubeconfig")
    }

    pub fn api(&self) -> Endpoint {
        Endpoint::admin(self.addr, &self.data)
    }

    /// GET `path` as JSON; None unless 200.
    pub fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        let (code, body) = self.api().try_get(path).ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// The identity this replica elects itself with.
    pub fn identity(&self) -> String {
        std::fs::read_to_string(self.data.join("leader-identity"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The holder of the controllers' Lease, as this replica serves it.
    pub fn holder(&self) -> Option<String> {
        let lease = self.get_json(
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/daemonset-agent-controllers",
        )?;
        lease["spec"]["holderIdentity"].as_str().map(String::from)
    }

    /// The renewTime of node `node`'s Lease ("" when there is none).
    pub fn lease_renewed(&self, node: &str) -> String {
        self.get_json(&format!(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
        ))
        .and_then(|l| l["spec"]["renewTime"].as_str().map(String::from))
        .unwrap_or_default()
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.proc
            .as_ref()
            .map(|p| p.log_tail(n))
            .unwrap_or_default()
    }
}
