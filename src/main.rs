//! `daemonset-agent`: one binary, one function per subcommand.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use daemonset_agent::agent::{self, config};
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
    /// kubeconfig of the API server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// containerd's gRPC socket.
    #[arg(long)]
    containerd_socket: Option<PathBuf>,
    /// containerd namespace of this agent's containers.
    #[arg(long)]
    containerd_namespace: Option<String>,
    /// Directory for the agent's state (pods, logs, desired-state cache).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Directory of the store (state.db) and of admin.kubeconfig.
    #[arg(long, default_value = "/var/lib/daemonset-agent-server")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: std::net::SocketAddr,
    /// Admit privileged containers (`--allow-privileged=false` refuses them with a 422, as
    /// kube-apiserver does).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    allow_privileged: bool,
    /// Admit hostPath volumes (`--allow-host-path=false` refuses them with a 422).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    allow_host_path: bool,
}

fn main() -> ExitCode {
    // The hidden `log-driver` mode, started by containerd's shim with the URI's query pairs as
    // arguments in no fixed order (so not a clap subcommand): synchronous, no async runtime.
    if let Some(code) = daemonset_agent::logdriver::main_if_invoked() {
        return code;
    }
    let cli = Cli::parse();
    if matches!(cli.command, Command::Agent(_)) {
        // A node agent should be small: one malloc arena instead of one per thread (glibc
        // would keep up to 8 per core of mostly idle memory). Set before any thread starts.
        // SAFETY: mallopt only changes allocator tuning; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
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
    let opts = server::ServerOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        policy: daemonset_agent::core::validation::Policy {
            allow_privileged: args.allow_privileged,
            allow_host_path: args.allow_host_path,
        },
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
        containerd_socket: a.containerd_socket.clone(),
        containerd_namespace: a.containerd_namespace.clone(),
        state_dir: a.state_dir.clone(),
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
