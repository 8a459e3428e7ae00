//! The container runtime seam: what the agent needs from containerd, behind a small trait so that
//! the reconcile loop can be tested with a fake, and a real adapter (`containerd`) proven against
//! a real containerd + runc.
pub mod archive;
pub mod cgroup;
pub mod client;
pub mod cni;
pub mod configvol;
pub mod containerd;
pub mod dns;
pub mod downward;
pub mod exec;
pub mod pull;
pub mod sandbox;
pub mod seccomp;
pub mod spec;

pub use self::containerd::ContainerdRuntime;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodSpec};

/// Labels on every container the agent creates. They are the agent's memory: a restarted agent
/// lists containers by these labels and adopts them instead of starting new ones.
pub mod labels {
    pub const MANAGED_BY: &str = "io.daemonset-agent.managed-by";
    pub const MANAGED_BY_VALUE: &str = "daemonset-agent";
    pub const POD_NAMESPACE: &str = "io.daemonset-agent.pod.namespace";
    pub const POD_NAME: &str = "io.daemonset-agent.pod.name";
    pub const POD_UID: &str = "io.daemonset-agent.pod.uid";
    pub const CONTAINER_NAME: &str = "io.daemonset-agent.container.name";
    pub const DAEMONSET_NAMESPACE: &str = "io.daemonset-agent.daemonset.namespace";
    pub const DAEMONSET_NAME: &str = "io.daemonset-agent.daemonset.name";
    pub const DAEMONSET_UID: &str = "io.daemonset-agent.daemonset.uid";
    /// The pod template hash, as in the pod label `controller-revision-hash`.
    pub const TEMPLATE_HASH: &str = "io.daemonset-agent.template-hash";
    /// How many times this container (pod, name) was restarted before this incarnation.
    pub const RESTART_COUNT: &str = "io.daemonset-agent.restart-count";
}

/// What identifies a pod's sandbox (its namespaces, network and pod directory); also its record
/// on disk (`sandbox::write_record`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSandbox {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub host_network: bool,
    /// hostIPC: the pod's containers share the node's IPC namespace (else one of the pod's).
    pub host_ipc: bool,
    /// The labels the sandbox is recorded with (the pod's, as its containers carry them): a
    /// sandbox left without containers (an agent stopped between the two) is listed with them,
    /// so that it is found and removed.
    pub labels: BTreeMap<String, String>,
    /// The hostPorts of the pod's containers, mapped by the CNI `portmap` plugin (pods with a
    /// network namespace of their own).
    pub port_mappings: Vec<PortMapping>,
}

/// One hostPort, as CNI's `portMappings` capability takes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The node address the port listens on; empty: every address.
    #[serde(default, rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

impl PortMapping {
    /// The hostPorts of a pod's containers (none with hostNetwork: the ports are the node's).
    pub fn of(spec: &PodSpec) -> Vec<PortMapping> {
        if spec.host_network.unwrap_or(false) {
            return Vec::new();
        }
        spec.containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let host_port = u16::try_from(p.host_port?).ok().filter(|h| *h > 0)?;
                Some(PortMapping {
                    host_port,
                    container_port: u16::try_from(p.container_port).ok()?,
                    protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// The host resources of a pod sandbox, as created by `Runtime::create_sandbox`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SandboxInfo {
    /// Path of the pod's network namespace (a bind mount); `None` with hostNetwork.
    pub netns: Option<PathBuf>,
    /// Path of the pod's IPC namespace (a bind mount); `None` with hostIPC.
    pub ipc_ns: Option<PathBuf>,
    /// Directory of the pod on the host; emptyDir volume NAME lives in `pod_dir/volumes/NAME`.
    pub pod_dir: PathBuf,
    /// The pod's IPs, as its network plugin gave them (IPv4 first); empty with hostNetwork.
    pub ips: Vec<String>,
}

/// What the downward API tells a container of its pod (beyond the spec).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodMeta {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The node's IPs (status.hostIPs).
    pub host_ips: Vec<String>,
    /// The ConfigMaps, Secrets and tokens its volumes and env use.
    pub objects: configvol::PodObjects,
}

/// When to pull a container's image (`imagePullPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Resolve the tag again on every container start.
    Always,
    /// Pull only when the image is not present.
    #[default]
    IfNotPresent,
    /// Never pull: a missing image is an error (ErrImageNeverPull).
    Never,
}

impl PullPolicy {
    /// The policy a container asks for, defaulted as the API server does (Always for `:latest`
    /// or no tag, else IfNotPresent).
    pub fn of(c: &Container) -> PullPolicy {
        let image = c.image.as_deref().unwrap_or("");
        let p = c
            .image_pull_policy
            .as_deref()
            .unwrap_or_else(|| crate::core::validation::default_pull_policy(image));
        match p {
            "Always" => PullPolicy::Always,
            "Never" => PullPolicy::Never,
            _ => PullPolicy::IfNotPresent,
        }
    }
}

/// Everything needed to create and start one container of a pod.
#[derive(Debug, Clone)]
pub struct ContainerRequest {
    /// containerd container id: `[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`, at most 76 characters.
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// The whole pod spec: volumes, hostNetwork, pod securityContext, grace period.
    pub pod_spec: PodSpec,
    /// The container of `pod_spec` to run.
    pub container: Container,
    /// Its image, as `Runtime::ensure_image` resolved it.
    pub image: PulledImage,
    pub sandbox: SandboxInfo,
    /// The pod's hostname (its name, unless hostNetwork).
    pub hostname: String,
    /// The container's log file: CRI-format records written by the log driver, or raw output
    /// appended by the shim (see [`OutputMode`]); either way kept while the agent is down.
    pub log_path: PathBuf,
    /// The pod's metadata, for the downward API.
    pub pod: PodMeta,
}

/// How the runtime keeps containers' stdout and stderr. Both live beside containerd's shim, not
/// in the agent, so output is kept while the agent is stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OutputMode {
    /// The shim appends the raw output of both streams to the log file.
    #[default]
    ShimFile,
    /// The shim starts `binary` as the log driver ([`crate::logdriver`]): CRI-format records in
    /// the log file and, when `journal` names journald's socket, one journal entry per line.
    Driver {
        /// The daemonset-agent binary (absolute).
        binary: PathBuf,
        journal: Option<PathBuf>,
        /// The node's name, for the NODE field.
        node: String,
        /// The driver rotates the log file at this size (0: never), keeping `max_files` files.
        max_size: u64,
        max_files: u32,
    },
}

/// A container's task state as containerd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    /// The container exists but has no task (or the task was never started).
    Created,
    Running {
        pid: u32,
    },
    Stopped {
        exit_code: u32,
        /// Unix time in seconds of the exit, if known.
        exited_at: Option<i64>,
    },
}

/// One container of ours, as listed from containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub state: TaskState,
    /// Unix time in seconds of the container's creation.
    pub created_at: i64,
}

/// How a command run with `Runtime::exec_sync` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecExit {
    Exited(u32),
    TimedOut,
}

/// What `Runtime::exec_sync` gives: how the command ended and its output (stdout and stderr,
/// at most 10 KiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub exit: ExecExit,
    pub output: String,
}

/// What `Runtime::exec_start` runs in a container (`kubectl exec`): the command, which standard
/// streams the caller wants, and whether under a terminal (then stderr goes to it as well).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// The terminal's size at the start (width, height), when the client told it already.
    pub size: Option<(u32, u32)>,
}

/// A process `Runtime::exec_start` started: the ends of its standard streams (FIFOs the shim
/// copies from and to, as containerd's cio makes them) and its control.
pub struct ExecSession {
    pub stdin: Option<tokio::net::unix::pipe::Sender>,
    /// The process's stdout (with a terminal: the terminal's output). Opened read-write, so it
    /// never ends by itself: all of the output is in it once `ExecControl::wait` returns.
    pub stdout: Option<tokio::net::unix::pipe::Receiver>,
    pub stderr: Option<tokio::net::unix::pipe::Receiver>,
    pub control: Box<dyn ExecControl>,
}

/// An attach's way into a container's stdin.
pub struct AttachStdin {
    pub stdin: tokio::net::unix::pipe::Sender,
    /// `stdinOnce`: the stdin is closed for good when this attach ends.
    pub once: bool,
}

/// The control of a started exec process.
#[async_trait::async_trait]
pub trait ExecControl: Send + Sync {
    /// Waits for the process to end and deletes it (when the shim has copied all of its output):
    /// its exit status.
    async fn wait(&self) -> Result<u32>;
    /// The terminal's new size.
    async fn resize(&self, width: u32, height: u32) -> Result<()>;
    /// The end of the process's input: the caller closed its stdin FIFO, and the shim closes
    /// its own end (it keeps one open for as long as it is not told).
    async fn close_stdin(&self) -> Result<()>;
    /// Kills the process if it still runs and deletes it (the client went away).
    async fn end(&self);
}

/// A pulled image: the reference and its manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub reference: String,
    pub digest: String,
}

/// A present image, as `Runtime::ensure_image` resolved it: what the pod's status shows and what
/// creating a container of it needs, so that a container start resolves its image once.
#[derive(Debug, Clone, PartialEq)]
pub struct PulledImage {
    pub info: ImageInfo,
    /// The image config's `config` object (Entrypoint, Cmd, Env, WorkingDir, User), or Null.
    pub config: serde_json::Value,
    /// The chainID of the top layer: the parent snapshot of a container's rootfs.
    pub chain_id: String,
}

/// What went wrong in the runtime. Each variant names the operation and the object; the cause
/// (containerd's gRPC status, the registry's answer, the system call's errno) is its `source()`,
/// and [`chain`] writes the whole story on one line for logs and pod status messages.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("pull image {image}")]
    ImagePull {
        image: String,
        #[source]
        source: pull::PullError,
    },
    #[error("invalid container spec for {id}")]
    InvalidSpec {
        id: String,
        #[source]
        source: spec::SpecError,
    },
    /// The image is not present and the pull policy is Never (the kubelet's ErrImageNeverPull).
    #[error("Container image {image:?} is not present with pull policy of Never")]
    ImageNeverPull { image: String },
    #[error("container {0} not found")]
    NotFound(String),
    #[error("connect to containerd at {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("containerd {op} {id}")]
    Containerd {
        op: &'static str,
        id: String,
        #[source]
        source: tonic::Status,
    },
    /// A step that did not come to the end it should have, with no error of its own to show.
    #[error("{op} {id}: {what}")]
    Incomplete {
        op: &'static str,
        id: String,
        what: &'static str,
    },
    #[error("{op} {id}: no answer in {}s", after.as_secs())]
    Timeout {
        op: &'static str,
        id: String,
        after: Duration,
    },
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network of pod {pod}")]
    Network {
        pod: String,
        #[source]
        source: cni::CniError,
    },
    #[error("sandbox of pod {pod}")]
    Sandbox {
        pod: String,
        #[source]
        source: sandbox::SandboxError,
    },
    #[error("{op} {id}: the blocking task failed")]
    Blocking {
        op: &'static str,
        id: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("{op} is not supported by this runtime")]
    Unsupported { op: &'static str },
}

impl RuntimeError {
    /// The error of `op` on `path`, for `map_err`.
    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> RuntimeError + 'a {
        move |source| RuntimeError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The reason a container that could not start waits with, as the kubelet names it.
    pub fn reason(&self) -> &'static str {
        match self {
            RuntimeError::ImagePull { .. } => "ErrImagePull",
            RuntimeError::ImageNeverPull { .. } => "ErrImageNeverPull",
            RuntimeError::InvalidSpec {
                source: spec::SpecError::Config(_),
                ..
            } => "CreateContainerConfigError",
            RuntimeError::InvalidSpec {
                source: spec::SpecError::Mount(_),
                ..
            }
            | RuntimeError::Network { .. } => "ContainerCreating",
            _ => "CreateContainerError",
        }
    }
}

/// `e` and its causes on one line, outermost first, as Go's wrapped errors read (`pull image x:
/// resolve x: ...`): a gRPC status as `rpc error: code = NotFound desc = ...` (the kubelet's
/// words), and a cause whose text its parent already quoted is not repeated.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    fn text(e: &(dyn std::error::Error + 'static)) -> String {
        match e.downcast_ref::<tonic::Status>() {
            Some(s) => format!("rpc error: code = {:?} desc = {}", s.code(), s.message()),
            None => e.to_string(),
        }
    }
    let mut out = text(e);
    let mut next = e.source();
    while let Some(cause) = next {
        let t = text(cause);
        if !t.is_empty() && !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        next = cause.source();
    }
    out
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// What the agent needs from a container runtime. Every method is idempotent where it can be:
/// removing a container that is gone is Ok, pulling a present image transfers nothing.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Make `reference` present locally (pulling it from its registry if it is not); what it
    /// gives is what `run_container` needs of the image (`ContainerRequest::image`).
    async fn ensure_image(&self, reference: &str) -> Result<PulledImage>;
    /// The image of a container under its pull policy: Always resolves the tag again, Never
    /// takes only what is present (`RuntimeError::ImageNeverPull` otherwise).
    async fn image_for(&self, reference: &str, policy: PullPolicy) -> Result<PulledImage> {
        let _ = policy;
        self.ensure_image(reference).await
    }
    /// Whether `reference` is present already (the kubelet's "already present on machine"
    /// event instead of Pulling/Pulled); false when unknown.
    async fn has_image(&self, reference: &str) -> bool {
        let _ = reference;
        false
    }

    /// `image_for` with the pod's registry credentials (its imagePullSecrets) over the node's.
    async fn image_for_pod(
        &self,
        reference: &str,
        policy: PullPolicy,
        pod: &pull::Credentials,
    ) -> Result<PulledImage> {
        let _ = pod;
        self.image_for(reference, policy).await
    }
    /// Create the pod's sandbox (network namespace unless hostNetwork, pod directory).
    /// Idempotent: returns the existing one when it is there.
    async fn create_sandbox(&self, pod: &PodSandbox) -> Result<SandboxInfo>;
    /// The sandbox of a pod whose containers already run (one a restarted agent adopts), without
    /// creating anything: None when its network namespace (unless hostNetwork) is not there.
    async fn sandbox(&self, pod: &PodSandbox) -> Result<Option<SandboxInfo>>;
    /// Remove the pod's sandbox (network namespace and pod directory).
    async fn remove_sandbox(&self, pod_uid: &str) -> Result<()>;
    /// Create the container and its task, and start it (its image was made present by
    /// `ensure_image`; it is not resolved again).
    async fn run_container(&self, req: &ContainerRequest) -> Result<()>;
    /// SIGTERM the container's processes, SIGKILL after `grace`; returns once the task stopped.
    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()>;
    /// Delete the task, the container and its snapshot. Ok if already gone.
    async fn remove_container(&self, id: &str) -> Result<()>;
    /// Every container of the agent's namespace with its labels and task state; and, for each
    /// pod sandbox no container belongs to, one entry with the sandbox's labels, no container
    /// name and state `Created` (so that the agent finds a sandbox it made and never used, and
    /// removes it with its pod).
    async fn list_containers(&self) -> Result<Vec<ContainerStatus>>;
    /// The runtime's name and version, as a Node's `containerRuntimeVersion` shows it
    /// (`containerd://1.6.20`).
    async fn version(&self) -> Result<String> {
        Ok("unknown://".into())
    }
    /// Runs `cmd` inside the running container `id` (its process spec with these args, no
    /// terminal) and waits up to `timeout` for it to end; a process still running then is
    /// killed and `ExecExit::TimedOut` returned.
    async fn exec_sync(
        &self,
        _id: &str,
        _cmd: &[String],
        _timeout: Duration,
    ) -> Result<ExecResult> {
        Err(RuntimeError::Unsupported { op: "exec" })
    }
    /// Starts `req.cmd` in the running container `id` as `exec_sync` does (its process spec
    /// with these args), its standard streams connected to the session's FIFOs.
    async fn exec_start(&self, _id: &str, _req: &ExecRequest) -> Result<ExecSession> {
        Err(RuntimeError::Unsupported { op: "exec" })
    }
    /// The write end of the stdin of the running container `id` for an attach: None when it
    /// has none (no `stdin`, or closed after a `stdinOnce` attach).
    async fn attach_stdin(&self, _id: &str) -> Result<Option<AttachStdin>> {
        Ok(None)
    }
    /// Closes the stdin of container `id` for good (the end of a `stdinOnce` attach).
    async fn close_stdin(&self, _id: &str) -> Result<()> {
        Err(RuntimeError::Unsupported { op: "attach" })
    }
    /// The new size of the terminal of container `id`.
    async fn resize_terminal(&self, _id: &str, _width: u32, _height: u32) -> Result<()> {
        Err(RuntimeError::Unsupported { op: "attach" })
    }
    /// What the writable layer of container `id` holds: (bytes, inodes), from the
    /// snapshotter's usage of the container's snapshot. None when it cannot be told.
    async fn rootfs_usage(&self, _id: &str) -> Option<(u64, u64)> {
        None
    }
    /// The termination message of a container that exited: its terminationMessagePath file
    /// (the last 4 KiB), or with `fallback_log` (FallbackToLogsOnError, and the container
    /// failed with an empty file) the end of that log file. None when there is none.
    async fn termination_message(
        &self,
        _id: &str,
        _fallback_log: Option<&std::path::Path>,
    ) -> Option<String> {
        None
    }
    /// A stream of container ids whose task exited (wakes the reconcile loop early; the loop
    /// never relies on it alone).
    async fn subscribe_exits(&self) -> Result<tokio::sync::mpsc::Receiver<String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that quotes its cause in its own message, as some crates' errors do.
    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[test]
    fn chains_read_as_one_line() {
        let e = RuntimeError::Containerd {
            op: "create task",
            id: "c1".into(),
            source: tonic::Status::not_found("no such file"),
        };
        assert_eq!(
            chain(&e),
            "containerd create task c1: rpc error: code = NotFound desc = no such file"
        );
        let e = RuntimeError::ImagePull {
            image: "busybox".into(),
            source: pull::PullError::Archive(archive::ArchiveError::Read {
                path: PathBuf::from("/a.tar"),
                source: std::io::Error::other("disk on fire"),
            }),
        };
        assert_eq!(chain(&e), "pull image busybox: read /a.tar: disk on fire");
        let e = Quoting(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner", "a quoted cause is not repeated");
    }
}
