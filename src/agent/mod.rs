//! The node daemon, kubelet-like: registers its Node, watches the Pods bound to it (and its Node,
//! and the DaemonSets), and keeps containerd running exactly those pods, whoever made them (the
//! server's DaemonSet controller, a person with `spec.nodeName`).
//!
//! One controller loop (`controller`) owns the decisions: on a watch event, a container exit or a
//! timer, it lists our containers once, takes the bound pods and hands each pod's worker its
//! latest desired state. Workers (`worker`) act on containerd; `podsync` writes the pods' status
//! and deletes a pod the API deletes once its containers are gone. Nothing on the container path
//! waits for the API. Time comes from one injected `clock::Clock`.
pub mod clock;
pub mod config;
pub mod configsource;
pub mod controller;
pub mod events;
pub mod hooks;
pub mod join;
pub mod localapi;
pub mod node;
pub mod nodeapi;
pub mod podsync;
pub mod prepull;
pub mod prober;
pub mod servers;
pub mod watch;
pub mod worker;

use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio::sync::{mpsc, watch as tokio_watch};

use crate::runtime::Runtime;
use clock::Clock;
use config::Config;

/// Connects to the API described by the kubeconfig file.
pub async fn client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read kubeconfig {}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("load kubeconfig {}", kubeconfig.display()))?;
    client_for(&cfg)
}

/// The agent's own client stack for `cfg` (HTTP/2: one connection for all its pods' requests
/// and watches, as the kubelet's client-go), as a joined node's; the CA, client certificate or
/// token as kube reads them. The benchmark harness's simulated nodes use it too, so they load
/// the server as agents do (one connection each, not one per watch).
pub fn client_for(cfg: &kube::Config) -> anyhow::Result<kube::Client> {
    let tls = kube::client::ConfigExt::rustls_client_config(cfg)?;
    Ok(join::client_over(cfg, tls, false, None)?)
}

/// A running agent, as tests and the binary hold it.
pub struct Agent {
    pub store: Arc<watch::Store>,
    client: kube::Client,
    runtime_version: String,
    clock: Clock,
    cfg: Arc<tokio::sync::Mutex<Config>>,
    /// Retries a reloaded configuration the API could not take (it was down): a newer reload
    /// replaces it.
    pending: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    shutdown: tokio_watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Applies a reloaded configuration (SIGHUP): new labels and taints go to the Node at once
    /// (and come back through the Node's watch). Labels a previous configuration set and this one
    /// dropped stay on the Node (remove them with `kubectl label node NAME key-`). When the API
    /// cannot take them (it is down), they are retried with back-off (1 s doubling to 30 s) until
    /// it can, or until a newer reload replaces them: a relabel made while the server is away
    /// reaches the Node when it is back (the fault matrix found it dropped after one try).
    pub async fn reload(&self, new: Config) {
        if let Some(older) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            older.abort();
        }
        let unchanged = {
            let cfg = self.cfg.lock().await;
            new.node_labels == cfg.node_labels && new.node_taints == cfg.node_taints
        };
        if unchanged {
            tracing::info!("configuration reloaded; nothing changed for the node");
            return;
        }
        let me = self.node_updater();
        if let Err(e) = me.apply(&new).await {
            tracing::error!(error = %crate::runtime::chain(&e), "configuration reloaded but the node could not be updated; retrying");
            let task = tokio::spawn(async move {
                let mut delay = std::time::Duration::from_secs(1);
                loop {
                    tokio::time::sleep(delay).await;
                    match me.apply(&new).await {
                        Ok(()) => return,
                        Err(e) => {
                            delay = (delay * 2).min(std::time::Duration::from_secs(30));
                            tracing::warn!(error = %crate::runtime::chain(&e), retry_in_s = delay.as_secs(), "the reloaded node labels and taints still could not be applied");
                        }
                    }
                }
            });
            *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        }
    }

    fn node_updater(&self) -> NodeUpdater {
        NodeUpdater {
            client: self.client.clone(),
            runtime_version: self.runtime_version.clone(),
            clock: self.clock.clone(),
            cfg: self.cfg.clone(),
        }
    }

    /// Stops the agent's loops. The containers keep running: a restarted agent adopts them.
    pub async fn shutdown(self) {
        if let Some(t) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.abort();
        }
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// What a reload needs to write the Node's labels and taints, also from a task of its own.
struct NodeUpdater {
    client: kube::Client,
    runtime_version: String,
    clock: Clock,
    cfg: Arc<tokio::sync::Mutex<Config>>,
}

impl NodeUpdater {
    /// Registers the Node with `new`'s labels and taints; on success `new` is the configuration.
    async fn apply(&self, new: &Config) -> kube::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let status = node::node_status(&self.runtime_version, self.clock.now_ms());
        node::register(&nodes, new, status).await?;
        tracing::info!(
            node = new.node_name.as_str(),
            "configuration reloaded; node labels and taints updated"
        );
        *self.cfg.lock().await = new.clone();
        Ok(())
    }
}

/// Starts the agent with a runtime already connected. Returns once its loops run; the Node is
/// registered in the background (retrying while the API is unreachable, the agent running from
/// its cache meanwhile).
pub async fn start(mut cfg: Config, runtime: Arc<dyn Runtime>) -> anyhow::Result<Agent> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("create state dir {}", cfg.state_dir.display()))?;
    // the state holds pod objects (env values included), ServiceAccount tokens, credentials and
    // the pods' logs, written with the usual 0644: the directory itself keeps other users out,
    // whatever mode an older version or a package made it with
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&cfg.state_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("make state dir {} private", cfg.state_dir.display()))?;
    }
    // bound before the Node is registered: it reports the port (also a port 0 chose)
    let node_api = nodeapi::bind(&mut cfg).await;
    let (client, servers) = match &cfg.api {
        config::ApiAccess::Kubeconfig(path) => (client(path).await?, None),
        config::ApiAccess::Join { servers, token } => {
            let joined = join::connect_any(servers, token, &cfg.node_name, &cfg.state_dir)
                .await
                .map_err(|e| anyhow::anyhow!(crate::runtime::chain(&e)))?;
            let client = joined.client.clone();
            let servers = joined.servers.clone();
            tokio::spawn(joined.keep_renewed());
            (client, Some(servers))
        }
    };
    let cached = watch::load_cache(&cfg.state_dir);
    if let Some(c) = &cached {
        tracing::info!(
            pods = c.pods.as_ref().map_or(0, |p| p.len()),
            "loaded the bound pods of the last run from the cache"
        );
    }
    let cached_uids: std::collections::BTreeSet<String> = (cached.iter())
        .flat_map(|c| c.pods.iter().flatten())
        .filter_map(|(_, p)| p.metadata.uid.clone())
        .collect();
    let (store, writers) = watch::Store::new(cached);
    let clock = Clock::system();
    let (shutdown, shutdown_rx) = tokio_watch::channel(false);
    let ctx = Arc::new(worker::Context {
        prober: Arc::new(prober::NetProber {
            runtime: runtime.clone(),
        }),
        runtime,
        state_dir: cfg.state_dir.clone(),
        host_ip: crate::runtime::cni::host_ip(),
        node: cfg.node_name.clone(),
        started: Some(tokio::time::Instant::now()),
        clock: clock.clone(),
        events: events::Recorder::start(
            crate::core::events::Source {
                component: "kubelet".into(),
                host: cfg.node_name.clone(),
            },
            clock.clone(),
            Arc::new(events::KubeSink(client.clone())),
        ),
        objects: Arc::new(configsource::FromApi::remembering(
            client.clone(),
            configsource::Remembered::open(cfg.state_dir.join("pod-objects"), &cached_uids),
        )),
    });
    let node_ref = events::node_ref(&cfg.node_name);
    ctx.events
        .normal(&node_ref, "Starting", "Starting kubelet.");
    let (pod_tx, pod_rx) = mpsc::unbounded_channel();
    tokio::spawn(podsync::run(client.clone(), pod_rx));
    let runtime_version = match ctx.runtime.version().await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %crate::runtime::chain(&e), "containerd did not tell its version");
            "containerd://unknown".into()
        }
    };
    tokio::spawn(node::heartbeat(
        client.clone(),
        servers,
        cfg.clone(),
        runtime_version.clone(),
        clock.clone(),
    ));
    watch::spawn(client.clone(), &cfg.node_name, store.clone(), writers);
    tokio::spawn(prepull::run(
        client.clone(),
        store.clone(),
        ctx.runtime.clone(),
    ));
    let exec_runtime = ctx.runtime.clone();
    let controller = controller::Controller::new(cfg.clone(), ctx, store.clone(), pod_tx);
    if let Some(listener) = node_api {
        tokio::spawn(nodeapi::run(
            client.clone(),
            cfg.clone(),
            listener,
            nodeapi::NodeApi {
                node: cfg.node_name.clone(),
                state_dir: cfg.state_dir.clone(),
                containerd_namespace: cfg.containerd_namespace.clone(),
                pods: controller.view(),
                runtime: exec_runtime,
                idle_timeout: cfg.streaming_connection_idle_timeout,
            },
        ));
    }
    let synced_store = store.clone();
    let api = localapi::LocalApi {
        node: cfg.node_name.clone(),
        state_dir: cfg.state_dir.clone(),
        pods: controller.view(),
        progress: controller.progress(),
        synced: Arc::new(move || synced_store.synced()),
    };
    tokio::spawn(async move {
        if let Err(e) = localapi::serve(api).await {
            tracing::error!(error = %crate::runtime::chain(&e), "local API stopped");
        }
    });
    let task = tokio::spawn(controller.run(shutdown_rx));
    Ok(Agent {
        store,
        client,
        runtime_version,
        clock,
        cfg: Arc::new(tokio::sync::Mutex::new(cfg)),
        pending: std::sync::Mutex::new(None),
        shutdown,
        task,
    })
}

/// A real API for the tests of the agent's API side: the server of this crate, in-process, on a
/// loopback port and a temporary directory.
#[cfg(test)]
pub(crate) mod test_api {
    use std::time::Duration;

    pub struct TestApi {
        pub server: crate::server::RunningServer,
        pub client: kube::Client,
        _dir: tempfile::TempDir,
    }

    pub async fn start() -> TestApi {
        let dir = tempfile::tempdir().unwrap();
        serve(dir, "127.0.0.1:0".parse().unwrap(), None).await
    }

    /// An admin token the server of [`TestApi::restart_insecure_on`] knows.
    pub const TEST_TOKEN: &str = "abcdef.0123456789abcdef";

    /// Stores the record of [`TEST_TOKEN`] (admin) in the store under `data`.
    async fn add_test_token(data: &std::path::Path) {
        use crate::server::auth::tokens::{self, Role, TokenRecord};
        use crate::server::store::ObjectStore as _;
        let token = crate::core::credential::Token::parse(TEST_TOKEN).unwrap();
        let record = TokenRecord {
            id: token.id.clone(),
            secret_sha256: token.secret_hash(),
            role: Role::Admin,
            expires: None,
            description: "test".into(),
        };
        let store = crate::server::store::SqliteStore::open(&data.join("state.db"), 10).unwrap();
        store
            .create(
                &crate::server::kinds::SECRETS.key(),
                tokens::TOKEN_NAMESPACE,
                &tokens::record_name(&token.id),
                record.to_secret(),
            )
            .await
            .unwrap();
    }

    async fn serve(
        dir: tempfile::TempDir,
        listen: std::net::SocketAddr,
        insecure_listen: Option<std::net::SocketAddr>,
    ) -> TestApi {
        let opts = crate::server::ServerOptions {
            data_dir: dir.path().join("server"),
            listen,
            insecure_listen,
            ..Default::default()
        };
        let server = crate::server::start(opts).await.unwrap();
        let client = super::client(&server.kubeconfig).await.unwrap();
        TestApi {
            server,
            client,
            _dir: dir,
        }
    }

    impl TestApi {
        /// The same store, served again (the server stopped first), also over plain HTTP on
        /// `listen` (a loopback address), where a client with [`TEST_TOKEN`] is admin.
        pub async fn restart_insecure_on(self, listen: std::net::SocketAddr) -> TestApi {
            self.server.shutdown().await;
            add_test_token(&self._dir.path().join("server")).await;
            serve(self._dir, "127.0.0.1:0".parse().unwrap(), Some(listen)).await
        }
    }

    /// Waits (through a watch) until `name` in `api` satisfies `cond`; panics after 20 s.
    pub async fn until<K>(
        api: &kube::Api<K>,
        name: &str,
        what: &str,
        cond: impl kube::runtime::wait::Condition<K>,
    ) -> Option<K>
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    {
        let wait = kube::runtime::wait::await_condition(api.clone(), name, cond);
        match tokio::time::timeout(Duration::from_secs(20), wait).await {
            Ok(Ok(obj)) => obj,
            other => panic!("never: {what}: {other:?}"),
        }
    }
}
