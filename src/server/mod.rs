//! `daemonset-agent server`: a Kubernetes-compatible API endpoint (apps/v1 DaemonSets and
//! ControllerRevisions, v1 Nodes, Pods and Namespaces, coordination.k8s.io/v1 Leases) that real
//! kubectl and Kubernetes client libraries use unchanged, with an embedded SQLite store.
//!
//! Codemap: `router` (paths, query options, the HTTP side of each verb), `body` (bodies in,
//! responses out), `query` (query options, selectors), `auth` (the authentication and
//! authorization seam), `verbs` (the generic store: create, get, list, watch, update, patch,
//! delete, deletecollection over the `ObjectStore`), `watch` (the watch stream), `strategy` (the
//! per-kind `Strategy`), `kinds/` (one file per served kind, and the registry), `resources`
//! (what a resource is; lookups), `subresource` (`status`, and the seam for more), `store`
//! (SQLite, watch fan-out), `discovery` (discovery and OpenAPI), `table` (kubectl's Tables),
//! `controllers/` (the DaemonSet controller: pods, revisions, status), `status` (errors as
//! `Status`).
//!
//! Plain HTTP (HTTP/1.1 and h2c) for now; TLS and bearer tokens slot in at the accept loop and at
//! `auth`. Pods bound to a node are deleted gracefully, and finalizers hold a deletion (`verbs`).
pub mod auth;
pub mod body;
pub mod controllers;
pub mod discovery;
pub mod kinds;
pub mod meta;
pub mod protobuf;
pub mod query;
pub mod resources;
pub mod router;
pub mod status;
pub mod store;
pub mod strategy;
pub mod subresource;
pub mod table;
pub mod verbs;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use auth::User;
use query::WriteOpts;
use store::{ObjectStore, SqliteStore};
use verbs::Api;

/// Recent watch events kept in memory for watches that resume from a resourceVersion.
pub const WATCH_HISTORY: usize = 10_000;

/// Namespaces that exist from the start, as in Kubernetes.
pub const INITIAL_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Holds `state.db` (the SQLite store) and `admin.kubeconfig`.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Privileged containers and hostPath volumes allowed (both by default).
    pub policy: crate::core::validation::Policy,
    /// How long a node's agent may be silent before its node is Ready=Unknown
    /// (`--node-monitor-grace-period`).
    pub node_monitor_grace_period: std::time::Duration,
}

/// kube-controller-manager's default `--node-monitor-grace-period`.
pub const DEFAULT_NODE_MONITOR_GRACE_PERIOD: std::time::Duration =
    std::time::Duration::from_secs(40);

/// A started server.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, closes every connection and the controller, and releases the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The admin kubeconfig (plain HTTP, no credentials yet).
pub fn kubeconfig_yaml(addr: SocketAddr) -> String {
    let mut host = addr;
    if host.ip().is_unspecified() {
        host.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: daemonset-agent
  cluster:
    server: http://{host}
contexts:
- name: daemonset-agent
  context:
    cluster: daemonset-agent
    user: daemonset-agent
    namespace: default
current-context: daemonset-agent
users:
- name: daemonset-agent
  user: {{}}
preferences: {{}}
"
    )
}

fn write_kubeconfig(path: &Path, addr: SocketAddr) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("kubeconfig.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(kubeconfig_yaml(addr).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn ensure_namespaces(api: &Api) -> anyhow::Result<()> {
    let user = User::internal("bootstrap");
    for ns in INITIAL_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match api
            .create(&user, &kinds::NAMESPACES, None, obj, WriteOpts::INTERNAL)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(anyhow::anyhow!("creating namespace {ns}: {e}")),
        }
    }
    Ok(())
}

/// Raises the soft limit of open files to the hard limit: every watch is a connection, and
/// thousands of agents watch at once.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(limit = hard, error = %e, "cannot raise the open files limit");
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open files limit");
        }
    }
}

/// Opens the store, writes `DATA_DIR/admin.kubeconfig` and serves on `opts.listen`.
pub async fn start(opts: ServerOptions) -> anyhow::Result<RunningServer> {
    raise_open_files_limit();
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating data directory {}", opts.data_dir.display()))?;
    let db = opts.data_dir.join("state.db");
    let store = SqliteStore::open(&db, WATCH_HISTORY)
        .with_context(|| format!("opening store {}", db.display()))?;
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    let api = Arc::new(Api::new(store, opts.policy));
    ensure_namespaces(&api).await?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let kubeconfig = opts.data_dir.join("admin.kubeconfig");
    write_kubeconfig(&kubeconfig, addr)?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut tasks = JoinSet::new();
        let mut controllers_stop = stopped.clone();
        let nodes = controllers::nodelifecycle::Options::with_grace(opts.node_monitor_grace_period);
        tasks.spawn(controllers::run(api.clone(), nodes, async move {
            let _ = controllers_stop.wait_for(|stop| *stop).await;
        }));
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let api = api.clone();
                    tasks.spawn(async move {
                        let service = service_fn(move |req| {
                            let api = api.clone();
                            async move { Ok::<_, std::convert::Infallible>(router::handle(api, req).await) }
                        });
                        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                            tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.shutdown().await;
    });
    tracing::info!(addr = %addr, data_dir = %opts.data_dir.display(), "api server listening");
    Ok(RunningServer {
        addr,
        kubeconfig,
        stop,
        task,
    })
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(opts: ServerOptions) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let server = start(opts).await?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // Type=notify: systemd considers the server started once it listens
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(every) = sd_notify::watchdog_enabled().map(|d| d / 3) {
        // WatchdogSec=: pinged while the runtime that serves requests makes progress
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down the api server");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    server.shutdown().await;
    Ok(())
}
