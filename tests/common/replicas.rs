//! Server replicas on the test's etcd members ([`Etcd`]), for tests of what clients do across
//! replicas (`tests/failover.rs`). Included with `#[path]`
//! by the tests that use it.
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::common::api::Endpoint;
pub use super::common::etcd::Etcd;
use super::common::proc::Proc;
use super::common::{free_port, wait_for};

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
        let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Replica::spawn(dir, name, etcd, extra, addr, format!("{name}.log"))
    }

    /// kill -9, and the same replica started again (its data directory and address) on `etcd`:
    /// a process without the history the first one kept in memory. Its log is `NAME.restarted.log`.
    pub fn restart(&mut self, dir: &Path, etcd: &Etcd, extra: &[&str]) {
        self.kill();
        let log = format!("{}.restarted.log", self.name);
        *self = Replica::spawn(dir, &self.name, etcd, extra, self.addr, log);
    }

    fn spawn(
        dir: &Path,
        name: &str,
        etcd: &Etcd,
        extra: &[&str],
        addr: std::net::SocketAddr,
        log: String,
    ) -> Replica {
        let data = dir.join(name);
        std::fs::create_dir_all(&data).unwrap();
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
        let proc = Proc::spawn(&args, dir.join(log));
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
