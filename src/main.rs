//! `daemonset-agent`: one binary, one function per subcommand.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use daemonset_agent::agent::{self, config};
use daemonset_agent::cli::{convert, create, tokens, why};
use daemonset_agent::runtime::containerd::{ContainerdRuntime, NodeOptions};
use daemonset_agent::runtime::{pull, OutputMode};
use daemonset_agent::{logging, server};

/// EX_USAGE: the configuration is wrong.
const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "daemonset-agent",
    version,
    about = "Kubernetes DaemonSets on plain Linux machines, through containerd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent (normally started by systemd).
    Agent(AgentArgs),
    /// Run the Kubernetes-compatible API server (embedded SQLite store).
    Server(ServerArgs),
    /// Show the pods this node runs, from the local agent.
    Status(LocalArgs),
    /// Print a container's output, from the local agent.
    Logs(LogsArgs),
    /// Manage the API server's tokens (join and view), through the API as admin.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage nodes' credentials, through the API as admin.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Create a DaemonSet from flags (what `kubectl create deployment` does for Deployments).
    #[command(subcommand)]
    Create(CreateCommand),
    /// Turn Deployment and ReplicaSet manifests into DaemonSets (notes on stderr).
    Convert(ConvertArgs),
    /// Say whether a DaemonSet runs on a node and why, rule by rule (exit 0: it runs, 1: it
    /// does not, 2: an error).
    Why(WhyArgs),
}

/// `--kubeconfig`, else $KUBECONFIG, else the server's admin kubeconfig, as kubectl looks.
#[derive(clap::Args)]
struct KubeconfigArg {
    /// A kubeconfig with the right to read (why) or create (create) DaemonSets.
    #[arg(long, env = "KUBECONFIG", default_value = tokens::DEFAULT_ADMIN_KUBECONFIG)]
    kubeconfig: PathBuf,
}

impl KubeconfigArg {
    /// $KUBECONFIG may be a list; kubectl merges it, this takes its first file.
    fn path(&self) -> PathBuf {
        let text = self.kubeconfig.to_string_lossy();
        PathBuf::from(text.split(':').next().unwrap_or(&text))
    }
}

#[derive(Subcommand)]
enum CreateCommand {
    /// Create a DaemonSet running IMAGE on every node (or those --node-selector picks).
    #[command(alias = "ds")]
    Daemonset {
        name: String,
        /// The container image (repeatable: one container each).
        #[arg(long = "image", required = true)]
        images: Vec<String>,
        /// Run only on nodes with this label, key=value (repeatable).
        #[arg(long = "node-selector", value_name = "KEY=VALUE")]
        node_selector: Vec<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        /// The first container's port.
        #[arg(long)]
        port: Option<i32>,
        /// client: print only; server: the server validates and stores nothing.
        #[arg(long, value_enum, default_value = "none", default_missing_value = "client", num_args = 0..=1, require_equals = true)]
        dry_run: create::DryRun,
        #[arg(short, long, value_enum)]
        output: Option<create::Output>,
        #[command(flatten)]
        kubeconfig: KubeconfigArg,
        /// The containers' command.
        #[arg(last = true)]
        command: Vec<String>,
    },
}

#[derive(clap::Args)]
struct ConvertArgs {
    /// The manifest (YAML stream, JSON, a List); `-` reads stdin.
    #[arg(short, long)]
    filename: String,
    #[arg(short, long, value_enum, default_value = "yaml")]
    output: convert::Format,
}

#[derive(clap::Args)]
struct WhyArgs {
    /// The DaemonSet's name.
    daemonset: String,
    /// The node's name.
    #[arg(long)]
    node: String,
    #[arg(short, long)]
    namespace: Option<String>,
    #[command(flatten)]
    kubeconfig: KubeconfigArg,
}

#[derive(clap::Args)]
struct AdminArgs {
    /// An admin kubeconfig (the server writes DATA_DIR/admin.kubeconfig).
    #[arg(long, default_value = tokens::DEFAULT_ADMIN_KUBECONFIG)]
    kubeconfig: PathBuf,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (a join token: sha256:CA-HASH::ID.SECRET).
    Create {
        #[command(flatten)]
        admin: AdminArgs,
        /// What the token is for.
        #[arg(long, value_enum, default_value = "join")]
        role: tokens::Role,
        /// How long it is valid (s, m, h, d; 0: until deleted), as `kubeadm token create`.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// A note shown by `token list`.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the tokens (ids, roles, expiry; secrets are not kept).
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a token (by id or whole): joined nodes keep their certificates.
    Delete {
        #[command(flatten)]
        admin: AdminArgs,
        token: String,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Revoke a node's certificates: the server refuses them from then on.
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        node: String,
    },
}

/// `30s`, `15m`, `24h`, `7d`; `0` for no expiry.
fn parse_ttl(s: &str) -> Result<Option<std::time::Duration>, String> {
    if s == "0" {
        return Ok(None);
    }
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 24h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: use s, m, h or d")),
    };
    Ok(Some(std::time::Duration::from_secs(secs)))
}

#[derive(clap::Args)]
struct LocalArgs {
    /// The agent's state directory (its socket is STATE_DIR/agent.sock).
    #[arg(long, default_value = config::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[derive(clap::Args)]
struct LogsArgs {
    #[command(flatten)]
    local: LocalArgs,
    /// The pod's name.
    pod: String,
    /// The container (needed when the pod has several).
    #[arg(short, long, default_value = "")]
    container: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Keep printing as the container writes.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long, default_value_t = 0)]
    tail: u32,
    /// Start each line with the time it was written (RFC3339).
    #[arg(long)]
    timestamps: bool,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// TOML configuration file; flags override it.
    #[arg(long, env = "DSA_CONFIG")]
    config: Option<PathBuf>,
    /// Name of this node (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// A label of this node, key=value (repeatable).
    #[arg(long = "node-label", value_name = "KEY=VALUE")]
    node_labels: Vec<String>,
    /// A taint registered with this node, key=value:Effect (repeatable).
    #[arg(long = "node-taint", value_name = "KEY=VALUE:EFFECT")]
    node_taints: Vec<String>,
    /// kubeconfig of the API server (on the server's machine: its admin.kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The API server to join, https://HOST:PORT (with --token); several, comma-separated:
    /// replicas of one control plane, the agent fails over between them.
    #[arg(long, env = "DSA_SERVER")]
    server: Option<String>,
    /// The join token, sha256:CA-HASH::ID.SECRET (`daemonset-agent token create` prints it).
    #[arg(long, env = "DSA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// containerd's gRPC socket.
    #[arg(long)]
    containerd_socket: Option<PathBuf>,
    /// containerd namespace of this agent's containers.
    #[arg(long)]
    containerd_namespace: Option<String>,
    /// Directory for the agent's state (pods, logs, desired-state cache).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Address of the kubelet-compatible node API (default 0.0.0.0:10250; port 0: any free
    /// port, which the Node reports).
    #[arg(long, env = "DSA_NODE_API_LISTEN")]
    node_api_listen: Option<String>,
    /// How long an exec, attach or port-forward session may pass no data before it is ended
    /// (the kubelet's flag; default 4h).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    streaming_connection_idle_timeout: Option<std::time::Duration>,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Directory of the store (state.db) and of admin.kubeconfig.
    #[arg(long, default_value = "/var/lib/daemonset-agent-server")]
    data_dir: PathBuf,
    /// Address to serve HTTPS on (0.0.0.0:6443: every interface, for a fleet).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: std::net::SocketAddr,
    /// Also serve plain HTTP on this loopback address (benchmarks, debugging); requests still
    /// authenticate. Refused for any address but 127.0.0.1 and ::1.
    #[arg(long, value_name = "ADDR")]
    insecure_listen: Option<std::net::SocketAddr>,
    /// Another DNS name or IP address of the serving certificate (repeatable), for a name or
    /// address agents reach this server by that is not one of its interfaces'.
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
    /// Admit privileged containers (`--allow-privileged=false` refuses them with a 422, as
    /// kube-apiserver does).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    allow_privileged: bool,
    /// Admit hostPath volumes (`--allow-host-path=false` refuses them with a 422).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    allow_host_path: bool,
    /// How long a node's agent may be silent (no Lease renewal, no status) before its node is
    /// Ready=Unknown and tainted unreachable, as kube-controller-manager's flag: `40s`, `4s`,
    /// `1m30s`, `500ms`.
    #[arg(long, default_value = "40s", value_parser = parse_duration, value_name = "DURATION")]
    node_monitor_grace_period: std::time::Duration,
    /// How long a pod tolerates its node's `node.kubernetes.io/not-ready:NoExecute` taint unless it
    /// says otherwise (kube-apiserver's DefaultTolerationSeconds admission flag).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    default_not_ready_toleration_seconds: i64,
    /// How long a pod tolerates its node's `node.kubernetes.io/unreachable:NoExecute` taint unless
    /// it says otherwise: with `--node-monitor-grace-period`, how long a lost node's pods wait
    /// before they are deleted and replaced elsewhere.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    default_unreachable_toleration_seconds: i64,
    /// How long an event is kept after its last write, as kube-apiserver's flag: `1h`, `10m`.
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    event_ttl: std::time::Duration,
    /// Run the controllers (DaemonSets, ReplicaSets, the scheduler, node lifecycle, garbage
    /// collection, event compaction) only while this server holds the Lease
    /// `kube-system/daemonset-agent-controllers`, as kube-controller-manager's flag: servers
    /// sharing one store elect one of them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    leader_elect: bool,
    /// How long a leader's Lease is valid without renewal, as observed by the others (whole
    /// seconds).
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    leader_elect_lease_duration: std::time::Duration,
    /// How long the leader keeps trying to renew before it stops acting (below the lease
    /// duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    leader_elect_renew_deadline: std::time::Duration,
    /// How often candidates try to acquire and the leader renews.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    leader_elect_retry_period: std::time::Duration,
    /// Encrypt Secrets at rest as this EncryptionConfiguration says (kube-apiserver's file
    /// format; the `aesgcm` and `identity` providers).
    #[arg(long, value_name = "FILE")]
    encryption_provider_config: Option<PathBuf>,
    /// The longest life of a ServiceAccount token a TokenRequest gets (a longer request gets
    /// this), as kube-apiserver's flag; unset: as asked. kube-apiserver takes no less than 1h;
    /// this server takes 10s and more, so a test can watch tokens being refreshed.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    service_account_max_token_expiration: Option<std::time::Duration>,
    /// Keep the objects in etcd (v3 API) instead of DATA_DIR/state.db: its members' client
    /// URLs, comma separated (`https://h1:2379,https://h2:2379`), as k3s's flag. Several servers
    /// on one etcd serve the same API.
    #[arg(long, value_name = "URLS")]
    datastore_endpoint: Option<String>,
    /// The CA of the etcd members' certificates.
    #[arg(long, value_name = "FILE", requires = "datastore_endpoint")]
    datastore_cafile: Option<PathBuf>,
    /// The client certificate for etcd (with --datastore-keyfile).
    #[arg(long, value_name = "FILE", requires = "datastore_keyfile")]
    datastore_certfile: Option<PathBuf>,
    /// The client certificate's key for etcd.
    #[arg(long, value_name = "FILE", requires = "datastore_certfile")]
    datastore_keyfile: Option<PathBuf>,
    /// Where the objects are in etcd, as kube-apiserver's flag: PREFIX/RESOURCE/NAMESPACE/NAME.
    #[arg(long, default_value = "/registry", value_name = "PREFIX")]
    etcd_prefix: String,
    /// How often etcd's history is compacted (to the revision one interval before, as
    /// kube-apiserver's flag; 0: never by this server).
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    etcd_compaction_interval: std::time::Duration,
}

/// A Go duration as Kubernetes' flags take them: whole numbers with `ms`, `s`, `m` or `h`, one
/// after another (`1m30s`).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration like 40s, 1m30s or 500ms");
    let mut total = std::time::Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let one = match &rest[..unit] {
            "ms" => std::time::Duration::from_millis(1),
            "s" => std::time::Duration::from_secs(1),
            "m" => std::time::Duration::from_secs(60),
            "h" => std::time::Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let n = u32::try_from(n).map_err(|_| bad())?;
        total = total
            .checked_add(one.checked_mul(n).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        rest = &rest[unit..];
    }
    if total.is_zero() {
        return Err(bad());
    }
    Ok(total)
}

fn main() -> ExitCode {
    // The hidden `log-driver` mode, started by containerd's shim with the URI's query pairs as
    // arguments in no fixed order (so not a clap subcommand): synchronous, no async runtime.
    if let Some(code) = daemonset_agent::logdriver::main_if_invoked() {
        return code;
    }
    let cli = Cli::parse();
    // glibc would keep up to 8 malloc arenas per core of mostly idle memory. A node agent should
    // be small: one. The server: one per worker thread, so big request bodies freed on any
    // thread are given back by its trim (server::release_memory_after_big_bodies).
    let arenas = match cli.command {
        Command::Agent(_) => Some(1),
        Command::Server(_) => Some(2),
        _ => None,
    };
    if let Some(arenas) = arenas {
        // SAFETY: mallopt only changes allocator tuning; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("daemonset-agent: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        match cli.command {
            Command::Agent(a) => run_agent(a).await,
            Command::Server(s) => run_server(s).await,
            Command::Status(l) => report(daemonset_agent::cli::status(&l.state_dir).await),
            Command::Logs(l) => report(
                daemonset_agent::cli::logs(
                    &l.local.state_dir,
                    &l.namespace,
                    &l.pod,
                    &l.container,
                    l.follow,
                    l.tail,
                    l.timestamps,
                )
                .await,
            ),
            Command::Token(TokenCommand::Create {
                admin,
                role,
                ttl,
                description,
            }) => match parse_ttl(&ttl) {
                Ok(ttl) => report(tokens::create(&admin.kubeconfig, role, ttl, &description).await),
                Err(e) => {
                    eprintln!("daemonset-agent: --ttl {e}");
                    ExitCode::from(EX_USAGE)
                }
            },
            Command::Token(TokenCommand::List { admin }) => {
                report(tokens::list(&admin.kubeconfig).await)
            }
            Command::Token(TokenCommand::Delete { admin, token }) => {
                report(tokens::delete(&admin.kubeconfig, &token).await)
            }
            Command::Node(NodeCommand::Revoke { admin, node }) => {
                report(tokens::revoke_node(&admin.kubeconfig, &node).await)
            }
            Command::Create(CreateCommand::Daemonset {
                name,
                images,
                node_selector,
                namespace,
                port,
                dry_run,
                output,
                kubeconfig,
                command,
            }) => {
                let spec = create::Spec {
                    name,
                    images,
                    node_selector,
                    namespace,
                    port,
                    command,
                };
                report(create::run(&spec, dry_run, output, &kubeconfig.path()).await)
            }
            Command::Convert(c) => {
                report(convert::run(&c.filename, c.output).map_err(anyhow::Error::from))
            }
            Command::Why(w) => {
                match why::run(
                    &w.daemonset,
                    &w.node,
                    w.namespace.as_deref(),
                    &w.kubeconfig.path(),
                )
                .await
                {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::FAILURE,
                    Err(e) => {
                        eprintln!("daemonset-agent: {e:#}");
                        ExitCode::from(2)
                    }
                }
            }
        }
    })
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daemonset-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_server(args: ServerArgs) -> ExitCode {
    logging::init("daemonset-agent-server", None);
    let ms = |d: std::time::Duration| d.as_millis() as i64;
    let leader = daemonset_agent::core::leaderelection::Config {
        lease_duration_ms: ms(args.leader_elect_lease_duration),
        renew_deadline_ms: ms(args.leader_elect_renew_deadline),
        retry_period_ms: ms(args.leader_elect_retry_period),
    };
    if args.leader_elect {
        if let Err(e) = leader.validate() {
            eprintln!("daemonset-agent: --leader-elect-*: {e}");
            return ExitCode::from(64);
        }
    }
    let opts = server::ServerOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        insecure_listen: args.insecure_listen,
        tls_sans: args.tls_sans,
        policy: daemonset_agent::core::validation::Policy {
            allow_privileged: args.allow_privileged,
            allow_host_path: args.allow_host_path,
            default_not_ready_toleration_seconds: args.default_not_ready_toleration_seconds,
            default_unreachable_toleration_seconds: args.default_unreachable_toleration_seconds,
        },
        node_monitor_grace_period: args.node_monitor_grace_period,
        event_ttl: args.event_ttl,
        encryption_provider_config: args.encryption_provider_config,
        leader_elect: args.leader_elect.then_some(leader),
        service_account_max_token_expiration: args.service_account_max_token_expiration,
        datastore: args.datastore_endpoint.map(|endpoints| {
            let mut etcd = server::store::etcd::EtcdOptions::new(&endpoints);
            etcd.ca_file = args.datastore_cafile;
            etcd.cert_file = args.datastore_certfile;
            etcd.key_file = args.datastore_keyfile;
            etcd.prefix = args.etcd_prefix;
            etcd.compaction_interval = args.etcd_compaction_interval;
            etcd
        }),
    };
    match server::run(opts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn agent_flags(a: &AgentArgs) -> config::Flags {
    config::Flags {
        config: a.config.clone(),
        node_name: a.node_name.clone(),
        node_labels: a.node_labels.clone(),
        node_taints: a.node_taints.clone(),
        kubeconfig: a.kubeconfig.clone(),
        server: a.server.clone(),
        token: a.token.clone(),
        containerd_socket: a.containerd_socket.clone(),
        containerd_namespace: a.containerd_namespace.clone(),
        state_dir: a.state_dir.clone(),
        node_api_listen: a.node_api_listen.clone(),
        streaming_connection_idle_timeout: a.streaming_connection_idle_timeout,
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Containers' output goes through the log driver, which is this very binary.
fn container_output(cfg: &config::Config) -> OutputMode {
    let binary = match &cfg.log_driver_binary {
        Some(b) => Ok(b.clone()),
        None => std::env::current_exe(),
    };
    match binary {
        Ok(binary) => OutputMode::Driver {
            binary,
            journal: cfg.container_journal.clone(),
            node: cfg.node_name.clone(),
            max_size: cfg.container_log_max_size,
            max_files: cfg.container_log_max_files,
        },
        Err(e) => {
            tracing::warn!(error = %e, "own executable not found: containers' output goes to their log files only, raw");
            OutputMode::ShimFile
        }
    }
}

async fn run_agent(args: AgentArgs) -> ExitCode {
    let flags = agent_flags(&args);
    let cfg = match config::load(&flags, &hostname()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("daemonset-agent: invalid configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let credentials = match &cfg.registry_credentials {
        Some(path) => match pull::Credentials::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "daemonset-agent: invalid configuration: registry-credentials: {}",
                    daemonset_agent::runtime::chain(&e)
                );
                return ExitCode::from(EX_USAGE);
            }
        },
        None => pull::Credentials::default(),
    };
    logging::init("daemonset-agent", Some(&cfg.node_name));
    tracing::info!(node = cfg.node_name.as_str(), "starting agent");
    let runtime = match ContainerdRuntime::connect(
        &cfg.containerd_socket,
        &cfg.containerd_namespace,
        &cfg.state_dir,
    )
    .await
    {
        Ok(r) => Arc::new(
            r.with_output(container_output(&cfg))
                .with_network(&cfg.cni_conf_dir, &cfg.cni_bin_dirs)
                .with_node_options(NodeOptions {
                    seccomp_root: cfg.seccomp_profile_root.clone(),
                    allowed_unsafe_sysctls: cfg.allowed_unsafe_sysctls.clone(),
                })
                .with_credentials(credentials),
        ),
        Err(e) => {
            tracing::error!("{}", daemonset_agent::runtime::chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let agent = match agent::start(cfg, runtime).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("agent failed to start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                match config::load(&flags, &hostname()) {
                    Ok(c) => agent.reload(c).await,
                    Err(e) => tracing::error!("SIGHUP: configuration not reloaded: {e}"),
                }
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    agent.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_as_kubernetes_flags_take_them() {
        assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "40", "s", "4x", "0s", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
