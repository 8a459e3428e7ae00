//! The real runtime: containerd 1.6 over its gRPC socket (runc shim v2, overlayfs, cgroupfs).
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetRequest, KillRequest, ListContainersRequest, ListTasksRequest,
    StartRequest, SubscribeRequest, WaitRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::v1::Status as ProcStatus;
use containerd_client::types::Mount;

use super::client::{ctd_err, Ctd, SNAPSHOTTER};
use super::cni::{self, Attachment, Cni};
use super::spec::{HostFacts, SpecError};
use super::{
    cgroup, pull, sandbox, spec, ContainerRequest, ContainerStatus, ExecExit, ExecResult,
    OutputMode, PodSandbox, PullPolicy, PulledImage, Result, Runtime, RuntimeError, SandboxInfo,
    TaskState,
};

pub const RUNC_V2: &str = "io.containerd.runc.v2";
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// The prefix of the leases that hold a container's snapshot between Prepare and
/// Containers.Create.
const RUN_LEASE: &str = "dsa-run-";

/// containerd as the agent's runtime.
#[derive(Clone)]
pub struct ContainerdRuntime {
    ctd: Ctd,
    state_dir: PathBuf,
    /// Serializes pulls: two writers of the same blob would collide on containerd's ref lock.
    pull_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Held shared while a container starts (runc creates its cgroup and the parents), and
    /// exclusively while a removed container's cgroup parents are removed, so that a parent is
    /// never removed between runc's mkdir of it and of the container's cgroup under it.
    cgroup_lock: std::sync::Arc<tokio::sync::RwLock<()>>,
    output: OutputMode,
    /// The pods' network plugins; None: pods get a network namespace with loopback only.
    network: Option<Cni>,
    node: NodeOptions,
    /// Registry credentials for pulls (a docker config.json's `auths`).
    credentials: pull::Credentials,
}

/// What the node allows its pods, as the kubelet's flags say it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeOptions {
    /// Where `seccompProfile: {type: Localhost, localhostProfile: P}` finds P (the kubelet's
    /// `<root-dir>/seccomp`).
    pub seccomp_root: PathBuf,
    /// Unsafe sysctls pods may set (`name` or `prefix*`), as --allowed-unsafe-sysctls.
    pub allowed_unsafe_sysctls: Vec<String>,
}

/// What `create_and_start` needs: the raw containerd steps, with no Kubernetes in between.
pub struct RawContainer<'a> {
    pub id: &'a str,
    /// Image name as recorded in containerd (`ContainerStatus::image`).
    pub image: &'a str,
    /// Parent snapshot (the image's top chainID).
    pub chain_id: &'a str,
    pub labels: HashMap<String, String>,
    /// The OCI runtime spec (JSON).
    pub spec: &'a serde_json::Value,
    /// Regular file for stdout and stderr (created if missing); None: output discarded.
    pub log_path: Option<&'a Path>,
    /// A `binary://` log URI (the log driver); when set it replaces `log_path`.
    pub log_uri: Option<String>,
    /// Its stdin and terminal ([`stdio`]).
    pub stdio: StdioSpec,
}

/// The container's `stdin`, `stdinOnce` and `tty`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdioSpec {
    /// A stdin to attach to, closed after the first attach with `stdin_once`.
    pub stdin: bool,
    pub stdin_once: bool,
    /// The process runs on the shim's console (the spec's `process.terminal`).
    pub terminal: bool,
}

impl ContainerdRuntime {
    /// Connects to containerd at `socket`, using `namespace` for every call and `state_dir` for
    /// pod directories and network namespaces.
    pub async fn connect(
        socket: &Path,
        namespace: &str,
        state_dir: &Path,
    ) -> Result<ContainerdRuntime> {
        let ctd = Ctd::connect(socket, namespace).await?;
        // the snapshot an earlier agent prepared and was stopped before a container held it: its
        // lease (RUN_LEASE) would keep it for an hour; and what a pull or import it was killed
        // in the middle of wrote: their leases would keep it for a day (one agent owns a
        // namespace, so no pull of another runs)
        for prefix in [RUN_LEASE, "dsa-pull-", "dsa-import-"] {
            match ctd.delete_leases(prefix).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(leases = n, prefix, "deleted the leases of an earlier agent")
                }
                Err(e) => tracing::warn!(error = e.message(), "list leases"),
            }
        }
        // output files of probe execs an earlier agent was killed in the middle of
        if let Ok(dir) = std::fs::read_dir(state_dir.join("exec")) {
            for f in dir.flatten() {
                if f.file_name().to_string_lossy().starts_with("probe-") {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        super::exec::remove_stale(state_dir);
        stdio::adopt(&ctd, state_dir, namespace).await;
        Ok(ContainerdRuntime {
            ctd,
            state_dir: state_dir.to_path_buf(),
            pull_lock: Default::default(),
            cgroup_lock: Default::default(),
            output: OutputMode::default(),
            network: None,
            node: NodeOptions {
                seccomp_root: state_dir.join("seccomp"),
                allowed_unsafe_sysctls: Vec::new(),
            },
            credentials: pull::Credentials::default(),
        })
    }

    /// Pods without hostNetwork get their network from the CNI plugins of `conf_dir` (found in
    /// `bin_dirs`); results are cached under the state directory.
    pub fn with_network(mut self, conf_dir: &Path, bin_dirs: &[PathBuf]) -> ContainerdRuntime {
        self.network = Some(Cni {
            conf_dir: conf_dir.to_path_buf(),
            bin_dirs: bin_dirs.to_vec(),
            cache_dir: self.state_dir.join("cni"),
        });
        self
    }

    /// What the node allows its pods (seccomp profiles' directory, unsafe sysctls).
    pub fn with_node_options(mut self, node: NodeOptions) -> ContainerdRuntime {
        self.node = node;
        self
    }

    /// Credentials for the registries pulls go to.
    pub fn with_credentials(mut self, credentials: pull::Credentials) -> ContainerdRuntime {
        self.credentials = credentials;
        self
    }

    /// The CNI configuration pods are attached with, when there is one: without a configuration
    /// in the directory pods get loopback only (as before a network plugin is installed).
    fn network(&self) -> Option<&Cni> {
        self.network.as_ref().filter(|n| {
            match n.load() {
                Ok(_) => true,
                Err(cni::CniError::NoConfig(_)) => false,
                // a broken configuration is the pod's error, said when it is attached
                Err(_) => true,
            }
        })
    }

    /// What the spec of `req` needs to know of the node, read on a blocking thread.
    async fn host_facts(&self, req: &ContainerRequest) -> Result<HostFacts> {
        let wanted: Vec<String> = [
            req.container
                .security_context
                .as_ref()
                .and_then(|s| s.seccomp_profile.as_ref()),
            req.pod_spec
                .security_context
                .as_ref()
                .and_then(|s| s.seccomp_profile.as_ref()),
        ]
        .into_iter()
        .flatten()
        .filter(|p| p.type_ == "Localhost")
        .filter_map(|p| p.localhost_profile.clone())
        .collect();
        let node = self.node.clone();
        let state_dir = self.state_dir.clone();
        blocking_with("read node facts", &req.id, move || {
            let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
            let mut seccomp_profiles = std::collections::BTreeMap::new();
            for name in wanted {
                let path = node.seccomp_root.join(&name);
                let profile = if name.split('/').any(|p| p == "..") {
                    Err("the profile must stay inside the seccomp directory".to_string())
                } else {
                    std::fs::read(&path)
                        .map_err(|e| format!("read {}: {e}", path.display()))
                        .and_then(|b| {
                            serde_json::from_slice(&b)
                                .map_err(|e| format!("parse {}: {e}", path.display()))
                        })
                };
                seccomp_profiles.insert(name, profile);
            }
            HostFacts {
                node: node_capacity(&state_dir),
                hostname: nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().to_string())
                    .unwrap_or_default(),
                resolv_conf: read("/etc/resolv.conf"),
                hosts: read("/etc/hosts"),
                mountinfo: read("/proc/self/mountinfo"),
                seccomp_profiles,
                allowed_unsafe_sysctls: node.allowed_unsafe_sysctls,
                oom_score_adj_floor: spec::oom_score_adj_floor(
                    &read("/proc/self/status"),
                    &read("/proc/self/oom_score_adj"),
                ),
            }
        })
        .await
    }

    /// The network attachment of a pod whose network namespace is `netns`.
    fn attachment(pod: &PodSandbox, netns: &Path) -> Attachment {
        Attachment {
            id: pod.uid.clone(),
            netns: netns.to_path_buf(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            port_mappings: pod.port_mappings.clone(),
        }
    }

    /// How containers created from now on keep their output (containers already running keep
    /// theirs: their shim was set up when they started).
    pub fn with_output(mut self, output: OutputMode) -> ContainerdRuntime {
        self.output = output;
        self
    }

    /// The log URI of the driver for `req`, None when the shim writes the file itself.
    fn log_uri(&self, req: &ContainerRequest) -> Option<String> {
        let OutputMode::Driver {
            binary,
            journal,
            node,
            max_size,
            max_files,
        } = &self.output
        else {
            return None;
        };
        let label = |k: &str| req.labels.get(k).cloned().unwrap_or_default();
        let args = crate::logdriver::DriverArgs {
            file: req.log_path.clone(),
            journal: journal.clone(),
            pod: label(super::labels::POD_NAME),
            namespace: label(super::labels::POD_NAMESPACE),
            container: req.container.name.clone(),
            daemonset: label(super::labels::DAEMONSET_NAME),
            node: node.clone(),
            max_size: *max_size,
            max_files: *max_files,
        };
        Some(args.uri(binary))
    }

    /// The connection (namespace-bound gRPC clients), for lower-level use.
    pub fn client(&self) -> &Ctd {
        &self.ctd
    }

    pub fn namespace(&self) -> &str {
        &self.ctd.namespace
    }

    /// Pulls `reference` from its registry even if present (re-resolving the tag) and unpacks it.
    pub async fn pull(&self, reference: &str) -> Result<PulledImage> {
        let _one_at_a_time = self.pull_lock.lock().await;
        pull::pull(&self.ctd, reference, &self.credentials).await
    }

    /// Makes `reference` present, transferring nothing when it already is.
    pub async fn ensure(&self, reference: &str) -> Result<PulledImage> {
        if let Ok(Some(img)) = pull::local(&self.ctd, reference).await {
            return Ok(img);
        }
        let _one_at_a_time = self.pull_lock.lock().await;
        pull::ensure(&self.ctd, reference, &self.credentials).await
    }

    /// Imports the images of an OCI layout tar archive (for nodes without a registry); images
    /// without an `io.containerd.image.name` annotation are named `<base_name>:<ref.name>`.
    pub async fn import_oci_archive(
        &self,
        path: &Path,
        base_name: &str,
    ) -> Result<Vec<PulledImage>> {
        let _one_at_a_time = self.pull_lock.lock().await;
        pull::import_oci_archive(&self.ctd, path, base_name).await
    }
}

#[async_trait::async_trait]
impl Runtime for ContainerdRuntime {
    async fn has_image(&self, reference: &str) -> bool {
        matches!(pull::local(&self.ctd, reference).await, Ok(Some(_)))
    }

    async fn ensure_image(&self, reference: &str) -> Result<PulledImage> {
        self.ensure(reference).await
    }

    async fn image_for(&self, reference: &str, policy: PullPolicy) -> Result<PulledImage> {
        match policy {
            PullPolicy::IfNotPresent => self.ensure(reference).await,
            PullPolicy::Always => self.pull(reference).await,
            PullPolicy::Never => match pull::local(&self.ctd, reference).await? {
                Some(img) => Ok(img),
                None => Err(RuntimeError::ImageNeverPull {
                    image: reference.to_string(),
                }),
            },
        }
    }

    async fn image_for_pod(
        &self,
        reference: &str,
        policy: PullPolicy,
        pod: &pull::Credentials,
    ) -> Result<PulledImage> {
        let credentials = pod.over(&self.credentials);
        match policy {
            PullPolicy::IfNotPresent => {
                if let Ok(Some(img)) = pull::local(&self.ctd, reference).await {
                    return Ok(img);
                }
                let _one_at_a_time = self.pull_lock.lock().await;
                pull::ensure(&self.ctd, reference, &credentials).await
            }
            PullPolicy::Always => {
                let _one_at_a_time = self.pull_lock.lock().await;
                pull::pull(&self.ctd, reference, &credentials).await
            }
            PullPolicy::Never => self.image_for(reference, policy).await,
        }
    }

    async fn create_sandbox(&self, pod: &PodSandbox) -> Result<SandboxInfo> {
        let state_dir = self.state_dir.clone();
        let owned = pod.clone();
        let mut info = sandbox_step("create sandbox", &pod.uid, move || {
            sandbox::create(&state_dir, &owned)
        })
        .await?;
        if let (Some(netns), Some(net)) = (&info.netns, self.network()) {
            let network = |source| RuntimeError::Network {
                pod: pod.uid.clone(),
                source,
            };
            info.ips = match net.cached_ips(&pod.uid).map_err(network)? {
                Some(ips) => ips,
                None => {
                    // an ADD that never finished (an agent stopped in it): undone first
                    if net.attached(&pod.uid) {
                        net.del(&pod.uid, None).await.map_err(network)?;
                    }
                    net.add(&Self::attachment(pod, netns))
                        .await
                        .map_err(network)?
                }
            };
        }
        Ok(info)
    }

    async fn sandbox(&self, pod: &PodSandbox) -> Result<Option<SandboxInfo>> {
        let state_dir = self.state_dir.clone();
        let owned = pod.clone();
        let found = sandbox_step("look up sandbox", &pod.uid, move || {
            sandbox::existing(&state_dir, &owned)
        })
        .await?;
        let Some(mut info) = found else {
            return Ok(None);
        };
        if let (Some(_), Some(net)) = (&info.netns, self.network.as_ref()) {
            let network = |source| RuntimeError::Network {
                pod: pod.uid.clone(),
                source,
            };
            if let Some(ips) = net.cached_ips(&pod.uid).map_err(network)? {
                info.ips = ips;
                // the pod is adopted (the agent restarted): is its network still what the
                // plugins made?
                if let Err(e) = net.check(&pod.uid).await {
                    tracing::warn!(pod_uid = pod.uid.as_str(), error = %super::chain(&e), "CNI CHECK of an adopted pod failed");
                }
            }
        }
        Ok(Some(info))
    }

    async fn remove_sandbox(&self, pod_uid: &str) -> Result<()> {
        if let Some(net) = &self.network {
            if net.attached(pod_uid) {
                net.del(pod_uid, None)
                    .await
                    .map_err(|source| RuntimeError::Network {
                        pod: pod_uid.to_string(),
                        source,
                    })?;
            }
        }
        let state_dir = self.state_dir.clone();
        let uid = pod_uid.to_string();
        sandbox_step("remove sandbox", pod_uid, move || {
            sandbox::remove(&state_dir, &uid)?;
            sandbox::remove_record(&state_dir, &uid)
        })
        .await
    }

    async fn termination_message(&self, id: &str, fallback_log: Option<&Path>) -> Option<String> {
        let file = spec::termination_log(&self.state_dir, id);
        let log = fallback_log.map(Path::to_path_buf);
        blocking_with("read termination message", id, move || {
            termination_message(&file, log.as_deref())
        })
        .await
        .ok()
        .flatten()
    }

    async fn run_container(&self, req: &ContainerRequest) -> Result<()> {
        let invalid = |source| RuntimeError::InvalidSpec {
            id: req.id.clone(),
            source,
        };
        let facts = self.host_facts(req).await?;
        let plan = spec::build(req, self.namespace(), &self.state_dir, &facts).map_err(invalid)?;
        let host = plan.host;
        blocking_with("prepare host", &req.id, move || spec::prepare_host(&host))
            .await?
            .map_err(invalid)?;
        let labels: HashMap<String, String> = req.labels.clone().into_iter().collect();
        let image = &req.image;
        let pid = {
            let _cgroups_stay = self.cgroup_lock.read().await;
            self.create_and_start(&RawContainer {
                id: &req.id,
                image: &image.info.reference,
                chain_id: &image.chain_id,
                labels,
                spec: &plan.spec,
                log_path: Some(&req.log_path),
                log_uri: self.log_uri(req),
                stdio: StdioSpec {
                    stdin: req.container.stdin.unwrap_or(false),
                    stdin_once: req.container.stdin_once.unwrap_or(false),
                    terminal: req.container.tty.unwrap_or(false),
                },
            })
            .await?
        };
        tracing::info!(
            container_id = req.id.as_str(),
            image = image.info.reference.as_str(),
            pid = pid,
            "container started"
        );
        Ok(())
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        if !self.kill(id, libc::SIGTERM as u32, true).await? {
            return Ok(());
        }
        if self.wait_exit(id, grace).await? {
            return Ok(());
        }
        tracing::info!(
            container_id = id,
            grace_secs = grace.as_secs(),
            "grace period over, killing"
        );
        self.kill(id, libc::SIGKILL as u32, true).await?;
        if self.wait_exit(id, Duration::from_secs(30)).await? {
            Ok(())
        } else {
            Err(RuntimeError::Incomplete {
                op: "stop",
                id: id.to_string(),
                what: "the task did not exit after SIGKILL",
            })
        }
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        if let Some(TaskState::Running { .. }) = self.task_state(id).await? {
            self.kill(id, libc::SIGKILL as u32, true).await?;
            self.wait_exit(id, Duration::from_secs(30)).await?;
        }
        self.delete_task(id).await?;
        match self
            .ctd
            .containers()
            .delete(self.ctd.req(DeleteContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(ctd_err("delete container", id, s)),
        }
        self.remove_snapshot(id).await?;
        let files = spec::termination_log(&self.state_dir, id);
        if let Some(dir) = files.parent() {
            let dir = dir.to_path_buf();
            let _ = blocking_with("remove container files", id, move || {
                std::fs::remove_dir_all(dir)
            })
            .await;
        }
        let _no_start_now = self.cgroup_lock.write().await;
        let namespace = self.namespace().to_string();
        let owned = id.to_string();
        blocking_with("remove cgroups", id, move || {
            cgroup::remove(&namespace, &owned)
        })
        .await
    }

    async fn exec_sync(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecResult> {
        let process = self.exec_process_spec(id, cmd, None).await?;
        let exec_id = format!("probe-{:016x}", rand::random::<u64>());
        // the command's output goes to a file of ours, read (at most 10 KiB, as the kubelet
        // keeps) once the process is deleted, which is when the shim has copied all of it
        let out = self.state_dir.join("exec").join(&exec_id);
        let created = out
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::File::create(&out).map(drop));
        if let Err(source) = created {
            return Err(RuntimeError::Io {
                op: "create exec output file",
                path: out,
                source,
            });
        }
        let result = self
            .exec_process(id, &exec_id, process, &out, timeout)
            .await;
        let output = std::fs::File::open(&out)
            .and_then(|f| {
                use std::io::Read;
                let mut buf = Vec::new();
                f.take(10 * 1024).read_to_end(&mut buf).map(|_| buf)
            })
            .map(|b| String::from_utf8_lossy(&b).trim_end().to_string())
            .unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        result.map(|exit| ExecResult { exit, output })
    }

    async fn rootfs_usage(&self, id: &str) -> Option<(u64, u64)> {
        use containerd_client::services::v1::snapshots::UsageRequest;
        let usage = self
            .ctd
            .snapshots()
            .usage(self.ctd.req(UsageRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: id.to_string(),
            }))
            .await;
        match usage {
            Ok(u) => {
                let u = u.into_inner();
                Some((u64::try_from(u.size).ok()?, u64::try_from(u.inodes).ok()?))
            }
            Err(s) => {
                tracing::debug!(container_id = id, error = s.message(), "snapshot usage");
                None
            }
        }
    }

    async fn exec_start(&self, id: &str, req: &super::ExecRequest) -> Result<super::ExecSession> {
        let terminal = req.tty.then_some(req.size);
        let process = self.exec_process_spec(id, &req.cmd, terminal).await?;
        super::exec::start(&self.ctd, &self.state_dir, id, process, req).await
    }

    async fn attach_stdin(&self, id: &str) -> Result<Option<super::AttachStdin>> {
        let path = stdio::stdin_path(&self.state_dir, id);
        if !path.exists() {
            return Ok(None);
        }
        // the shim reads it for as long as the stdin is open (ENXIO after that)
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(&path) {
            Ok(stdin) => Ok(Some(super::AttachStdin {
                stdin,
                once: stdio::stdin_once(&self.state_dir, id),
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            Err(source) => Err(RuntimeError::Io {
                op: "open stdin FIFO",
                path,
                source,
            }),
        }
    }

    async fn close_stdin(&self, id: &str) -> Result<()> {
        super::exec::close_stdin(&self.ctd, id, "").await
    }

    async fn resize_terminal(&self, id: &str, width: u32, height: u32) -> Result<()> {
        super::exec::resize_pty(&self.ctd, id, "", width, height).await
    }

    async fn version(&self) -> Result<String> {
        let v = self
            .ctd
            .version()
            .version(())
            .await
            .map_err(|s| ctd_err("version", "", s))?
            .into_inner();
        Ok(format!("containerd://{}", v.version))
    }

    async fn list_containers(&self) -> Result<Vec<ContainerStatus>> {
        let containers = self
            .ctd
            .containers()
            .list(self.ctd.req(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(|s| ctd_err("list containers", "", s))?
            .into_inner()
            .containers;
        let tasks: HashMap<String, TaskState> = self
            .ctd
            .tasks()
            .list(self.ctd.req(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(|s| ctd_err("list tasks", "", s))?
            .into_inner()
            .tasks
            .iter()
            // containerd 1.6 leaves container_id empty and puts the container id in `id`
            .map(|p| {
                let id = if p.container_id.is_empty() {
                    &p.id
                } else {
                    &p.container_id
                };
                (id.clone(), state_of(p))
            })
            .collect();
        let mut out: Vec<ContainerStatus> = containers
            .into_iter()
            .map(|c| ContainerStatus {
                state: tasks.get(&c.id).cloned().unwrap_or(TaskState::Created),
                image: c.image,
                labels: c.labels.into_iter().collect::<BTreeMap<_, _>>(),
                created_at: c.created_at.map(|t| t.seconds).unwrap_or_default(),
                id: c.id,
            })
            .collect();
        // sandboxes no container belongs to, by their records
        let state_dir = self.state_dir.clone();
        let records =
            blocking_with("list sandboxes", "", move || sandbox::records(&state_dir)).await?;
        for r in records {
            let owned = out.iter().any(|c| {
                c.labels.get(super::labels::POD_UID).map(String::as_str) == Some(r.uid.as_str())
            });
            if !owned && !r.labels.is_empty() {
                out.push(ContainerStatus {
                    id: format!("sandbox-{}", r.uid),
                    image: String::new(),
                    labels: r.labels,
                    state: TaskState::Created,
                    created_at: 0,
                });
            }
        }
        Ok(out)
    }

    async fn subscribe_exits(&self) -> Result<tokio::sync::mpsc::Receiver<String>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let ctd = self.ctd.clone();
        // containerd sends the stream's headers only with its first event: subscribe in the
        // background and publish a marker event until it comes back, so that once this returns
        // no exit can be missed
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match subscribe(&ctd).await {
                    Ok(s) => {
                        if forward_exits(s, &tx, &mut ready).await {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %super::chain(&e), "subscribe to task exits"),
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let mut ready_rx = ready_rx;
        for _ in 0..100 {
            let marker = containerd_client::services::v1::PublishRequest {
                topic: SUBSCRIBED_TOPIC.to_string(),
                event: Some(containerd_client::to_any(
                    &containerd_client::events::ContainerDelete { id: String::new() },
                )),
            };
            self.ctd
                .events()
                .publish(self.ctd.req(marker))
                .await
                .map_err(|s| ctd_err("publish", SUBSCRIBED_TOPIC, s))?;
            if tokio::time::timeout(Duration::from_millis(50), &mut ready_rx)
                .await
                .is_ok()
            {
                return Ok(rx);
            }
        }
        Err(RuntimeError::Incomplete {
            op: "subscribe",
            id: "/tasks/exit".into(),
            what: "no event came back through the subscription",
        })
    }
}

/// `f` on a blocking thread (file system work: mounts, directories), so that no runtime thread
/// waits on the disk; `op` and `id` name it if the thread fails.
async fn blocking_with<T: Send + 'static>(
    op: &'static str,
    id: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| RuntimeError::Blocking {
            op,
            id: id.to_string(),
            source,
        })
}

/// A sandbox step on a blocking thread; its error names the pod.
async fn sandbox_step<T: Send + 'static>(
    op: &'static str,
    uid: &str,
    f: impl FnOnce() -> std::result::Result<T, sandbox::SandboxError> + Send + 'static,
) -> Result<T> {
    blocking_with(op, uid, f)
        .await?
        .map_err(|source| RuntimeError::Sandbox {
            pod: uid.to_string(),
            source,
        })
}

mod events;
mod files;
mod process;
mod stdio;
mod tasks;

use events::*;
use files::*;
use tasks::state_of;
