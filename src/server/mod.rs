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
//! `Status`), `tls` (the CA, the serving certificate, the acceptor), `signer` (node client
//! certificates from CSRs), `conn` (connection caps and timeouts, serving one connection),
//! `audit` (the request log), `bootstrap` (the CA, signing key and admin token replicas share
//! through etcd).
//!
//! HTTPS only (HTTP/1.1 and h2 by ALPN) on `--listen`; plain HTTP only on an explicit loopback
//! `--insecure-listen`, and there too every request but the health paths and `/version` must
//! authenticate. Pods bound to a node are deleted gracefully, and finalizers hold a deletion
//! (`verbs`).
pub mod apply;
pub mod audit;
pub mod auth;
pub mod body;
pub mod bootstrap;
mod conn;
pub mod controllers;
pub mod converted;
pub mod discovery;
pub mod encryption;
pub mod kinds;
pub mod meta;
pub mod metrics;
pub mod propagation;
pub mod protobuf;
pub mod proxy;
pub mod query;
pub mod resources;
pub mod router;
pub mod signer;
pub mod status;
pub mod store;
pub mod strategy;
pub mod subresource;
pub mod table;
pub mod tls;
pub mod verbs;
pub mod watch;

pub use conn::Limits;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::core::credential::Token;
use auth::User;
use query::WriteOpts;
use store::{ObjectStore, SqliteStore, Store, WATCH_HISTORY_BYTES};
use verbs::Api;

/// Recent watch events kept in memory for watches that resume from a resourceVersion.
pub const WATCH_HISTORY: usize = 10_000;

/// Namespaces that exist from the start, as in Kubernetes.
pub const INITIAL_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Holds `state.db` (the SQLite store), `admin.kubeconfig` and `tls/`.
    pub data_dir: PathBuf,
    /// HTTPS.
    pub listen: SocketAddr,
    /// Plain HTTP, on a loopback address only (benchmarks, debugging); None: none.
    pub insecure_listen: Option<SocketAddr>,
    /// More names of the serving certificate (`--tls-san`).
    pub tls_sans: Vec<String>,
    /// Privileged containers and hostPath volumes allowed (both by default).
    pub policy: crate::core::validation::Policy,
    /// How long a node's agent may be silent before its node is Ready=Unknown
    /// (`--node-monitor-grace-period`).
    pub node_monitor_grace_period: std::time::Duration,
    /// How long an event is kept after its last write (`--event-ttl`).
    pub event_ttl: std::time::Duration,
    /// kube-apiserver's `--encryption-provider-config`: the EncryptionConfiguration of the values
    /// encrypted at rest (`encryption`); None: stored as they are.
    pub encryption_provider_config: Option<PathBuf>,
    /// `--leader-elect` and its durations: the controllers run only while this server holds the
    /// Lease `kube-system/daemonset-agent-controllers`; None: always (`--leader-elect=false`).
    pub leader_elect: Option<crate::core::leaderelection::Config>,
    /// kube-apiserver's `--service-account-max-token-expiration`: the longest a TokenRequest's
    /// token may live (a longer request gets this); None: as asked.
    pub service_account_max_token_expiration: Option<std::time::Duration>,
    /// The objects in etcd (`--datastore-endpoint`, as k3s names it); None: in SQLite,
    /// `DATA_DIR/state.db`.
    pub datastore: Option<store::etcd::EtcdOptions>,
}

impl Default for ServerOptions {
    /// `daemonset-agent server`'s defaults.
    fn default() -> ServerOptions {
        ServerOptions {
            data_dir: PathBuf::from("/var/lib/daemonset-agent-server"),
            listen: SocketAddr::from(([127, 0, 0, 1], 6443)),
            insecure_listen: None,
            tls_sans: Vec::new(),
            policy: Default::default(),
            node_monitor_grace_period: DEFAULT_NODE_MONITOR_GRACE_PERIOD,
            event_ttl: kinds::event::DEFAULT_TTL,
            encryption_provider_config: None,
            leader_elect: Some(Default::default()),
            service_account_max_token_expiration: None,
            datastore: None,
        }
    }
}

/// kube-controller-manager's default `--node-monitor-grace-period`.
pub const DEFAULT_NODE_MONITOR_GRACE_PERIOD: std::time::Duration =
    std::time::Duration::from_secs(40);

/// A started server.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub insecure_addr: Option<SocketAddr>,
    pub kubeconfig: PathBuf,
    pub tls: Arc<tls::ServerTls>,
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

/// The admin kubeconfig: the server's HTTPS address, its CA, and the admin token.
pub fn kubeconfig_yaml(addr: SocketAddr, ca_pem: &str, token: &Token) -> String {
    use base64::Engine as _;
    let mut host = addr;
    if host.ip().is_unspecified() {
        host.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: daemonset-agent
  cluster:
    server: https://{host}
    certificate-authority-data: {ca}
contexts:
- name: daemonset-agent
  context:
    cluster: daemonset-agent
    user: daemonset-agent-admin
    namespace: default
current-context: daemonset-agent
users:
- name: daemonset-agent-admin
  user:
    token: {token}
preferences: {{}}
"
    )
}

/// The token of a kubeconfig this server wrote before (None: no file, or none in it).
fn kubeconfig_token(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: Value = serde_yaml::from_str(&text).ok()?;
    v.pointer("/users/0/user/token")?
        .as_str()
        .map(str::to_string)
}

/// The data directory and the store only their owner may read (the store holds the token
/// records and every Secret): 0700 and 0600, also when an earlier version made them wider.
fn private_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", data_dir.display()))?;
    let db = data_dir.join("state.db");
    // SQLite gives its -wal and -shm files the mode of the database file
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&db)
        .with_context(|| format!("creating {}", db.display()))?;
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let p = data_dir.join(f);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {} private", p.display()))?;
        }
    }
    Ok(())
}

pub(crate) async fn ensure_namespaces(api: &Api) -> anyhow::Result<()> {
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

/// The next connection of an optional listener (never, without one).
async fn accept_on(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Gives freed heap pages back to the system a second or two after a big request body (glibc
/// keeps them otherwise: 30 refused 2.7 MB bodies left the server at three times its size).
async fn release_memory_after_big_bodies() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = false;
    loop {
        tick.tick().await;
        if body::take_big_bodies() > 0 {
            // wait for a quiet second: the requests holding the memory end first
            pending = true;
        } else if pending {
            pending = false;
            // SAFETY: malloc_trim only releases free heap pages.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

/// Opens the store, makes or loads the CA and the serving certificate, writes
/// `DATA_DIR/admin.kubeconfig` and serves HTTPS on `opts.listen` (and plain HTTP on
/// `opts.insecure_listen`).
pub async fn start(opts: ServerOptions) -> anyhow::Result<RunningServer> {
    raise_open_files_limit();
    if let Some(a) = opts.insecure_listen.filter(|a| !a.ip().is_loopback()) {
        anyhow::bail!("--insecure-listen {a}: plain HTTP is only served on a loopback address (127.0.0.1, ::1)");
    }
    if let Some(d) = opts
        .service_account_max_token_expiration
        .filter(|d| d.as_secs() < 10)
    {
        anyhow::bail!("--service-account-max-token-expiration {d:?}: at least 10s");
    }
    private_data_dir(&opts.data_dir)?;
    let db = opts.data_dir.join("state.db");
    let transform: Arc<dyn encryption::Transformer> = match &opts.encryption_provider_config {
        Some(path) => Arc::new(encryption::Config::load(path)?),
        None => Arc::new(encryption::Identity),
    };
    let store = match &opts.datastore {
        None => SqliteStore::open_transformed(
            &db,
            WATCH_HISTORY,
            WATCH_HISTORY_BYTES,
            transform.clone(),
        )
        .with_context(|| format!("opening store {}", db.display()))?,
        Some(etcd) => {
            let etcd = store::etcd::EtcdOptions {
                high_water: Some(opts.data_dir.join("etcd.high-water")),
                ..etcd.clone()
            };
            Store::connect_etcd(&etcd, WATCH_HISTORY, WATCH_HISTORY_BYTES, transform.clone())
                .await
                .with_context(|| format!("the etcd store at {}", etcd.endpoints.join(",")))?
        }
    };
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    let api = Arc::new(Api::new(store, opts.policy));
    // the node authorizer's graph follows the pods from the start (it ends with the store)
    tokio::spawn(api.graph.clone().populate(Arc::downgrade(&api.store)));
    ensure_namespaces(&api).await?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let insecure = match opts.insecure_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("listening on {a}"))?,
        ),
        None => None,
    };
    let insecure_addr = insecure.as_ref().map(|l| l.local_addr()).transpose()?;
    let names = tls::serving_names(&[addr], &opts.tls_sans);
    let now = chrono::Utc::now().timestamp();
    let kubeconfig = opts.data_dir.join("admin.kubeconfig");
    // on etcd, the CA, the signing key and the admin token come from the store (`bootstrap`)
    let shared = match &opts.datastore {
        Some(etcd) => Some(
            bootstrap::share_on_etcd(
                etcd,
                transform,
                &opts.data_dir,
                kubeconfig_token(&kubeconfig).as_deref(),
                now,
            )
            .await
            .context("the cluster's shared secrets")?,
        ),
        None => None,
    };
    let tls = Arc::new(
        tls::ServerTls::load_or_create(&opts.data_dir, names, now)
            .context("the server's certificates")?,
    );
    let token = match &shared {
        Some(shared) => {
            let token = shared.admin_token()?;
            auth::tokens::ensure_admin_token(&api, &token)
                .await
                .map(|()| token)
        }
        None => auth::tokens::ensure_admin(&api, kubeconfig_token(&kubeconfig).as_deref()).await,
    }
    .map_err(|e| anyhow::anyhow!("the admin token: {e}"))?;
    crate::pki::write_private(
        &kubeconfig,
        kubeconfig_yaml(addr, &tls.ca.cert_pem, &token).as_bytes(),
    )
    .with_context(|| format!("writing {}", kubeconfig.display()))?;
    let sa_key = opts.data_dir.join(auth::serviceaccount::KEY_FILE);
    let sa_key = auth::jwt::SigningKey::load_or_create(&sa_key)
        .context("the service account signing key")?;
    let mut issuer = auth::serviceaccount::Issuer::new(sa_key, tls.ca.cert_pem.clone());
    issuer.max_seconds = opts
        .service_account_max_token_expiration
        .map(|d| d.as_secs() as i64);
    let _ = api.service_accounts.set(Arc::new(issuer));
    let kubelet = proxy::KubeletClient::new(&tls.ca, now).context("the kubelet client")?;
    let _ = api.kubelet.set(Arc::new(kubelet));
    let ca = tls.ca.clone();
    let leader = controllers::leader::Options::for_data_dir(&opts.data_dir, opts.leader_elect);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let serving = tls.clone();
    let limits = Limits::from_env().capped_by_open_files();
    let (log, _log_task) = audit::RequestLog::start();
    let task = tokio::spawn(async move {
        let mut tasks = JoinSet::new();
        let mut controllers_stop = stopped.clone();
        let controllers = controllers::Options {
            nodes: controllers::nodelifecycle::Options::with_grace(opts.node_monitor_grace_period),
            leader,
            event_ttl: opts.event_ttl,
        };
        tasks.spawn(controllers::run(api.clone(), controllers, async move {
            let _ = controllers_stop.wait_for(|stop| *stop).await;
        }));
        tasks.spawn(signer::Signer::new(api.clone(), ca).run(stopped.clone()));
        tasks.spawn(tls::renew_loop(serving.clone(), stopped.clone()));
        tasks.spawn(release_memory_after_big_bodies());
        let conns = conn::Connections::new(&limits);
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
                    let client = audit::Client { addr: peer, log: log.clone() };
                    let admitted = match conns.admit(peer.ip()) {
                        Ok(admitted) => admitted,
                        Err(refusal) => {
                            conn::refuse(&stream, &client, &refusal);
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let (api, serving, limits) = (api.clone(), serving.clone(), limits.clone());
                    tasks.spawn(async move {
                        // the handshake gets the header timeout: the connection's timers start after it
                        match tokio::time::timeout(limits.header_timeout, serving.accept(stream)).await {
                            Ok(Ok((io, tls_peer))) => conn::serve(io, client, api, limits, admitted, tls_peer).await,
                            Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                        }
                    });
                }
                accepted = accept_on(insecure.as_ref()) => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let client = audit::Client { addr: peer, log: log.clone() };
                    let admitted = match conns.admit(peer.ip()) {
                        Ok(admitted) => admitted,
                        Err(refusal) => {
                            conn::refuse(&stream, &client, &refusal);
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    tasks.spawn(conn::serve(stream, client, api.clone(), limits.clone(), admitted, tls::Peer::default()));
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.shutdown().await;
    });
    tracing::info!(addr = %addr, insecure = ?insecure_addr, ca = %tls.ca.hash(), data_dir = %opts.data_dir.display(), "api server listening");
    Ok(RunningServer {
        addr,
        insecure_addr,
        kubeconfig,
        tls,
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
