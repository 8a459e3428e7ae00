//! The OCI runtime spec of a container, built as a pure function of the request, its image's
//! config and what the node says (`HostFacts`): containerd's default Linux spec (oci/spec.go) as
//! its CRI plugin trims it, plus what the kubelet and that plugin derive from a pod spec (process
//! args and env with the downward API, user and groups, capabilities, seccomp, masked paths,
//! sysctls, resources, namespaces, volumes with their propagation, the pod's /etc files and the
//! termination-message file).
//!
//! Host side effects (creating hostPath or emptyDir directories, writing the pod's files,
//! checking hostPath types) are not done here: `build` returns them as `HostPrep` steps and
//! `prepare_host` performs them.
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, PodSpec, SeccompProfile, Volume, VolumeMount};
use serde_json::{json, Value};

use super::configvol;
use super::downward::{self, NodeCapacity, PodFacts};
use super::{dns, seccomp, ContainerRequest};
use crate::core::quantity::{cpu_quota_us, cpu_shares, Quantity, QuantityError, CPU_PERIOD_US};

/// containerd's `defaultUnixCaps`.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux 5.x/6.x knows (what a privileged container gets).
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The kubelet's default masked paths (securitycontext.defaultMaskedPaths, as containerd's).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// The kubelet's default read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The sysctls the kubelet allows every pod (pkg/kubelet/sysctl: SafeSysctlAllowlist).
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// What the node says, read by the runtime before a spec is built, so that `build` stays pure.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// The node's capacity, for resourceFieldRef without a limit and the OOM score.
    pub node: NodeCapacity,
    /// The node's hostname (hostNetwork pods).
    pub hostname: String,
    /// The node's /etc/resolv.conf and /etc/hosts.
    pub resolv_conf: String,
    pub hosts: String,
    /// /proc/self/mountinfo, for the propagation a volume mount asks of its source.
    pub mountinfo: String,
    /// The Localhost seccomp profiles the container names, read from the node's seccomp
    /// directory, by `localhostProfile` (or what went wrong).
    pub seccomp_profiles: BTreeMap<String, Result<Value, String>>,
    /// Unsafe sysctls this node allows (`name` or `prefix*`), as kubelet's
    /// --allowed-unsafe-sysctls.
    pub allowed_unsafe_sysctls: Vec<String>,
    /// The lowest OOM score adjustment containers may get: the agent's own when it lacks
    /// CAP_SYS_RESOURCE (the kernel refuses a lower one, and runc's start with it), as
    /// containerd's `restrict_oom_score_adj` does; None: any.
    pub oom_score_adj_floor: Option<i64>,
}

/// The type check of a hostPath volume (`type`), as the kubelet's hostpath plugin does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathType {
    Directory,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl PathType {
    /// How the kubelet describes what was expected, and names what was found.
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            PathType::Directory => ("directory", "Directory"),
            PathType::File => ("file", "File"),
            PathType::Socket => ("socket file", "Socket"),
            PathType::CharDevice => ("character device", "CharDevice"),
            PathType::BlockDevice => ("block device", "BlockDevice"),
        }
    }
}

/// A host-side step the spec relies on, performed by `prepare_host` before the container starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPrep {
    /// Create the directory (and parents, mode 0755) if missing.
    CreateDir(PathBuf),
    /// Create an empty file (mode 0644) if nothing is there; the parent must exist.
    CreateFile(PathBuf),
    /// The hostPath of `volume` must exist and be of this type.
    Check {
        volume: String,
        path: PathBuf,
        want: PathType,
    },
    /// Write the file (parents made), replacing it.
    WriteFile {
        path: PathBuf,
        content: String,
        mode: u32,
    },
    /// Mount a tmpfs on the directory (made first) unless one is there: an emptyDir of medium
    /// Memory, shared by the pod's containers.
    Tmpfs { path: PathBuf, size: Option<i64> },
    /// fsGroup: the directory (and what is in it) group-owned by `gid`, group-writable, setgid.
    Own { path: PathBuf, gid: u32 },
    /// A configMap, secret or projected volume's files, written by the AtomicWriter.
    Atomic {
        dir: PathBuf,
        files: Vec<configvol::FileData>,
        gid: Option<u32>,
    },
}

/// The spec and the host steps it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecPlan {
    pub spec: Value,
    pub host: Vec<HostPrep>,
}

/// Why a container's spec cannot be built or its host side prepared.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The pod spec asks for something that makes no sense (CreateContainerError).
    #[error("{0}")]
    Invalid(String),
    /// The pod spec asks for what this node does not do or allow (CreateContainerConfigError:
    /// runAsNonRoot against the image, a refused field, a forbidden sysctl).
    #[error("{0}")]
    Config(String),
    /// A volume could not be set up (the kubelet's FailedMount; the container waits in
    /// ContainerCreating).
    #[error("{0}")]
    Mount(String),
    #[error("{what} {value}")]
    Quantity {
        what: &'static str,
        value: String,
        #[source]
        source: QuantityError,
    },
    /// A host step of `prepare_host` failed.
    #[error("{op} {}", path.display())]
    Host {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encode the OCI spec")]
    Encode(#[source] serde_json::Error),
    #[error("the container has no readable OCI spec")]
    Unreadable(#[source] Option<serde_json::Error>),
}

fn invalid(reason: impl Into<String>) -> SpecError {
    SpecError::Invalid(reason.into())
}

fn config(reason: impl Into<String>) -> SpecError {
    SpecError::Config(reason.into())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Process args per Kubernetes: `command` replaces ENTRYPOINT (and then the image CMD is ignored),
/// `args` replace CMD.
pub fn process_args(c: &Container, image: &Value) -> Vec<String> {
    let entrypoint = strings(&image["Entrypoint"]);
    let cmd = strings(&image["Cmd"]);
    match (&c.command, &c.args) {
        (Some(command), Some(args)) if !command.is_empty() => {
            [command.clone(), args.clone()].concat()
        }
        (Some(command), _) if !command.is_empty() => command.clone(),
        (_, Some(args)) if !args.is_empty() => [entrypoint, args.clone()].concat(),
        _ => [entrypoint, cmd].concat(),
    }
}

/// The image's `User` as (uid, gid): numeric parts only (`1000`, `1000:2000`; a name is None).
fn image_user(image: &Value) -> (Option<i64>, Option<i64>, &str) {
    let image_user = image["User"].as_str().unwrap_or_default();
    let (u, g) = match image_user.split_once(':') {
        Some((u, g)) => (u.parse::<i64>().ok(), g.parse::<i64>().ok()),
        None => (image_user.parse::<i64>().ok(), None),
    };
    (u, g, image_user)
}

/// uid, gid: securityContext (container over pod) else the image's numeric User, else 0.
fn user(pod: &PodSpec, c: &Container, image: &Value) -> (i64, i64) {
    let csc = c.security_context.as_ref();
    let psc = pod.security_context.as_ref();
    let (img_uid, img_gid, _) = image_user(image);
    let uid = csc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user))
        .or(img_uid)
        .unwrap_or(0);
    let gid = csc
        .and_then(|s| s.run_as_group)
        .or(psc.and_then(|s| s.run_as_group))
        .or(img_gid)
        .unwrap_or(0);
    (uid, gid)
}

/// The kubelet's verifyRunAsNonRoot: with runAsNonRoot, the user must be known and not root.
fn check_run_as_non_root(req: &ContainerRequest, image: &Value) -> Result<(), SpecError> {
    let c = &req.container;
    let csc = c.security_context.as_ref();
    let psc = req.pod_spec.security_context.as_ref();
    let non_root = csc
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    if !non_root {
        return Ok(());
    }
    let pod = format!("{}_{}({})", req.pod.name, req.pod.namespace, req.pod.uid);
    let run_as = csc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user));
    match run_as {
        Some(0) => Err(config(format!(
            "container's runAsUser breaks non-root policy (pod: {pod:?}, container: {})",
            c.name
        ))),
        Some(_) => Ok(()),
        None => match image_user(image) {
            (Some(u), _, _) if u != 0 => Ok(()),
            (None, _, name) if !name.is_empty() => Err(config(format!(
                "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root (pod: {pod:?}, container: {})",
                c.name
            ))),
            _ => Err(config(format!(
                "container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {})",
                c.name
            ))),
        },
    }
}

/// What the downward API reads of this request's pod.
fn facts<'a>(req: &'a ContainerRequest, host: &HostFacts) -> PodFacts<'a> {
    let host_network = req.pod_spec.host_network.unwrap_or(false);
    PodFacts {
        name: &req.pod.name,
        namespace: &req.pod.namespace,
        uid: &req.pod.uid,
        labels: &req.pod.labels,
        annotations: &req.pod.annotations,
        spec: &req.pod_spec,
        host_ips: &req.pod.host_ips,
        // a hostNetwork pod's IPs are the node's
        pod_ips: if host_network {
            &req.pod.host_ips
        } else {
            &req.sandbox.ips
        },
        node: host.node,
    }
}

/// The process environment: HOSTNAME, the image's, then the container's (downward API and
/// `$(VAR)` expanded), PATH defaulted; and the same as a lookup for expanding args and paths.
fn env(
    req: &ContainerRequest,
    image: &Value,
    hostname: &str,
    host: &HostFacts,
) -> Result<Vec<(String, String)>, SpecError> {
    let mut out: Vec<(String, String)> = vec![("HOSTNAME".into(), hostname.to_string())];
    let image_env = strings(&image["Env"])
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        });
    let (container, _) =
        configvol::resolve_env(&req.container, &req.pod.namespace, &req.pod.objects)
            .map_err(config)?;
    let container_env = downward::container_env(&container, &facts(req, host)).map_err(config)?;
    for (k, v) in image_env.chain(container_env) {
        match out.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        if let Some((k, v)) = DEFAULT_PATH.split_once('=') {
            out.insert(0, (k.to_string(), v.to_string()));
        }
    }
    Ok(out)
}

fn quantity(
    what: &'static str,
    q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
) -> Result<Quantity, SpecError> {
    Quantity::parse(&q.0).map_err(|source| SpecError::Quantity {
        what,
        value: q.0.clone(),
        source,
    })
}

fn resources(req: &ContainerRequest) -> Result<Value, SpecError> {
    let mut res = json!({"devices": [{"allow": false, "access": "rwm"}]});
    let Some(r) = req.container.resources.as_ref() else {
        return Ok(res);
    };
    let limit = |name: &str| r.limits.as_ref().and_then(|l| l.get(name));
    let request = |name: &str| r.requests.as_ref().and_then(|l| l.get(name));
    let mut cpu = serde_json::Map::new();
    if let Some(q) = limit("cpu") {
        let milli = quantity("cpu limit", q)?.milli_value();
        cpu.insert("quota".into(), json!(cpu_quota_us(milli)));
        cpu.insert("period".into(), json!(CPU_PERIOD_US));
    }
    if let Some(q) = request("cpu").or(limit("cpu")) {
        let milli = quantity("cpu request", q)?.milli_value();
        cpu.insert("shares".into(), json!(cpu_shares(milli)));
    }
    if !cpu.is_empty() {
        res["cpu"] = Value::Object(cpu);
    }
    if let Some(q) = limit("memory") {
        let bytes = quantity("memory limit", q)?.value();
        res["memory"] = json!({ "limit": bytes });
    }
    Ok(res)
}

/// The lowest OOM score adjustment the containers of an agent with `status` (its
/// /proc/self/status) and `own` (its oom_score_adj) can be given: without CAP_SYS_RESOURCE the
/// kernel refuses a lower one than its own (as in a container or a restricted VM), so its own.
pub fn oom_score_adj_floor(status: &str, own: &str) -> Option<i64> {
    const CAP_SYS_RESOURCE: u32 = 24;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())?;
    if eff & (1 << CAP_SYS_RESOURCE) != 0 {
        return None;
    }
    own.trim().parse().ok()
}

/// The kubelet's OOM score adjustment by QoS class (pkg/kubelet/qos: GetContainerOOMScoreAdjust).
fn oom_score_adj(req: &ContainerRequest, node_memory: i64) -> i64 {
    match crate::core::status::qos_class(&req.pod_spec) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let r = req.container.resources.as_ref();
            let request = r
                .and_then(|r| r.requests.as_ref().and_then(|q| q.get("memory")))
                .or(r.and_then(|r| r.limits.as_ref().and_then(|q| q.get("memory"))))
                .and_then(|q| Quantity::parse(&q.0).ok())
                .map_or(0, |q| q.value());
            if node_memory <= 0 {
                return 999;
            }
            let adj = 1000 - (1000 * i128::from(request) / i128::from(node_memory)) as i64;
            adj.clamp(2, 999)
        }
    }
}

fn capability(name: &str) -> String {
    let up = name.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

fn capabilities(c: &Container, privileged: bool) -> Vec<String> {
    if privileged {
        return ALL_CAPS.iter().map(|s| s.to_string()).collect();
    }
    let caps = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref());
    let drop: Vec<String> = caps
        .and_then(|c| c.drop.clone())
        .unwrap_or_default()
        .iter()
        .map(|s| capability(s))
        .collect();
    let mut out: Vec<String> = if drop.iter().any(|d| d == "CAP_ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|s| s.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for a in caps.and_then(|c| c.add.clone()).unwrap_or_default() {
        let a = capability(&a);
        if a == "CAP_ALL" {
            return ALL_CAPS.iter().map(|s| s.to_string()).collect();
        }
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// The seccomp profile (container's over pod's): None for Unconfined or none asked (the
/// kubelet's default without the SeccompDefault gate).
fn seccomp_profile(
    req: &ContainerRequest,
    caps: &[String],
    privileged: bool,
    host: &HostFacts,
) -> Result<Option<Value>, SpecError> {
    let profile: Option<&SeccompProfile> = req
        .container
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .or(req
            .pod_spec
            .security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref()));
    let Some(p) = profile else {
        return Ok(None);
    };
    match p.type_.as_str() {
        "Unconfined" => Ok(None),
        // a privileged container runs unconfined, as containerd's CRI plugin has it
        "RuntimeDefault" if privileged => Ok(None),
        "RuntimeDefault" => Ok(Some(seccomp::default_profile(caps))),
        "Localhost" => {
            let name = p.localhost_profile.as_deref().unwrap_or("");
            match host.seccomp_profiles.get(name) {
                Some(Ok(v)) => Ok(Some(v.clone())),
                Some(Err(e)) => Err(config(format!("seccomp profile {name:?}: {e}"))),
                None => Err(config(format!("seccomp profile {name:?} was not read"))),
            }
        }
        other => Err(config(format!("unknown seccomp profile type {other:?}"))),
    }
}

/// The pod's sysctls, checked as the kubelet admits them: safe ones, or unsafe ones the node
/// allows; net.* not with hostNetwork, IPC ones not with hostIPC.
fn sysctls(pod: &PodSpec, host: &HostFacts) -> Result<BTreeMap<String, String>, SpecError> {
    let mut out = BTreeMap::new();
    let list = pod
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.clone())
        .unwrap_or_default();
    for s in list {
        // a/b/c is the same sysctl as a.b.c
        let name = s.name.replace('/', ".");
        let allowed = SAFE_SYSCTLS.contains(&name.as_str())
            || host
                .allowed_unsafe_sysctls
                .iter()
                .any(|a| match a.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => *a == name,
                });
        if !allowed {
            return Err(config(format!(
                "forbidden sysctl: {name:?} not allowlisted"
            )));
        }
        let ipc = name.starts_with("kernel.shm")
            || name.starts_with("kernel.msg")
            || name == "kernel.sem"
            || name.starts_with("fs.mqueue.");
        if name.starts_with("net.") && pod.host_network.unwrap_or(false) {
            return Err(config(format!(
                "sysctl {name:?} not allowed with host net enabled"
            )));
        }
        if ipc && pod.host_ipc.unwrap_or(false) {
            return Err(config(format!(
                "sysctl {name:?} not allowed with host ipc enabled"
            )));
        }
        out.insert(name, s.value);
    }
    Ok(out)
}

/// A relative path that stays inside its base (no `..`, not absolute).
fn safe_sub_path(sub: &str) -> bool {
    Path::new(sub)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// The mount (of /proc/self/mountinfo) that `path` lives on, and its optional fields
/// (`shared:N`, `master:N`): the longest mount point that is a prefix of it.
fn mount_of<'a>(mountinfo: &'a str, path: &Path) -> Option<(&'a str, Vec<&'a str>)> {
    let mut best: Option<(&str, Vec<&str>)> = None;
    for line in mountinfo.lines() {
        let (head, _) = line.split_once(" - ")?;
        let fields: Vec<&str> = head.split(' ').collect();
        let Some(point) = fields.get(4) else { continue };
        if !path.starts_with(point) {
            continue;
        }
        if best.as_ref().is_none_or(|(b, _)| point.len() >= b.len()) {
            best = Some((point, fields[6..].to_vec()));
        }
    }
    best
}

/// containerd's ensureShared / ensureSharedOrSlave on the source of a propagating mount.
fn check_propagation(mountinfo: &str, source: &Path, shared_only: bool) -> Result<(), SpecError> {
    let Some((point, optional)) = mount_of(mountinfo, source) else {
        return Err(invalid(format!(
            "could not find the mount point of {}",
            source.display()
        )));
    };
    let shared = optional.iter().any(|o| o.starts_with("shared:"));
    let slave = optional.iter().any(|o| o.starts_with("master:"));
    if shared || (!shared_only && slave) {
        return Ok(());
    }
    let what = if shared_only {
        "a shared mount"
    } else {
        "a shared or slave mount"
    };
    Err(invalid(format!(
        "path {:?} is mounted on {point:?} but it is not {what}",
        source.display().to_string()
    )))
}

/// A hostPath volume: its source, whether it is a file, and the steps it needs.
fn host_path_source(vol: &Volume, host: &mut Vec<HostPrep>) -> Result<(PathBuf, bool), SpecError> {
    let Some(hp) = &vol.host_path else {
        unreachable!("called for hostPath volumes")
    };
    let path = PathBuf::from(&hp.path);
    if !path.is_absolute() {
        return Err(invalid(format!(
            "volume {}: hostPath {} is not absolute",
            vol.name, hp.path
        )));
    }
    let check = |want| HostPrep::Check {
        volume: vol.name.clone(),
        path: path.clone(),
        want,
    };
    let is_file = match hp.type_.as_deref().unwrap_or("") {
        "" => false,
        "DirectoryOrCreate" => {
            host.push(HostPrep::CreateDir(path.clone()));
            host.push(check(PathType::Directory));
            false
        }
        "Directory" => {
            host.push(check(PathType::Directory));
            false
        }
        "FileOrCreate" => {
            host.push(HostPrep::CreateFile(path.clone()));
            host.push(check(PathType::File));
            true
        }
        "File" => {
            host.push(check(PathType::File));
            true
        }
        "Socket" => {
            host.push(check(PathType::Socket));
            true
        }
        "CharDevice" => {
            host.push(check(PathType::CharDevice));
            true
        }
        "BlockDevice" => {
            host.push(check(PathType::BlockDevice));
            true
        }
        other => {
            return Err(invalid(format!(
                "volume {}: {other} is an invalid volume type",
                vol.name
            )))
        }
    };
    Ok((path, is_file))
}

/// The fsGroup of the pod, if any.
fn fs_group(pod: &PodSpec) -> Option<u32> {
    pod.security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok())
}

/// The source of `vol` on the host, whether it is a file, and whether it is always read-only
/// (downwardAPI), with the host steps that make it.
fn volume_source(
    req: &ContainerRequest,
    vol: &Volume,
    facts: &PodFacts,
    host: &mut Vec<HostPrep>,
) -> Result<(PathBuf, bool, bool), SpecError> {
    let pod_volume = req.sandbox.pod_dir.join("volumes").join(&vol.name);
    if vol.host_path.is_some() {
        let (p, is_file) = host_path_source(vol, host)?;
        return Ok((p, is_file, false));
    }
    if let Some(ed) = &vol.empty_dir {
        if ed.medium.as_deref() == Some("Memory") {
            let size = ed
                .size_limit
                .as_ref()
                .map(|q| quantity("emptyDir sizeLimit", q).map(|q| q.value()))
                .transpose()?;
            host.push(HostPrep::Tmpfs {
                path: pod_volume.clone(),
                size,
            });
        } else {
            host.push(HostPrep::CreateDir(pod_volume.clone()));
        }
        if let Some(gid) = fs_group(&req.pod_spec) {
            host.push(HostPrep::Own {
                path: pod_volume.clone(),
                gid,
            });
        }
        return Ok((pod_volume, false, false));
    }
    if let Some(src) = &vol.downward_api {
        let files = downward::volume_files(src, facts).map_err(|m| {
            SpecError::Mount(format!(
                "MountVolume.SetUp failed for volume {:?} : {m}",
                vol.name
            ))
        })?;
        host.push(HostPrep::CreateDir(pod_volume.clone()));
        for f in files {
            host.push(HostPrep::WriteFile {
                path: pod_volume.join(&f.path),
                content: f.content,
                mode: f.mode,
            });
        }
        if let Some(gid) = fs_group(&req.pod_spec) {
            host.push(HostPrep::Own {
                path: pod_volume.clone(),
                gid,
            });
        }
        return Ok((pod_volume, false, true));
    }
    let files = configvol::volume_files(vol, &req.pod.objects, facts).map_err(|m| {
        SpecError::Mount(format!(
            "MountVolume.SetUp failed for volume {:?} : {m}",
            vol.name
        ))
    })?;
    if let Some(files) = files {
        let gid = fs_group(&req.pod_spec);
        host.push(HostPrep::Atomic {
            dir: pod_volume.clone(),
            files,
            gid,
        });
        return Ok((pod_volume, false, true));
    }
    Err(config(format!(
        "volume {}: only hostPath, emptyDir, downwardAPI, configMap, secret and projected volumes are supported by this node agent",
        vol.name
    )))
}

/// The container's mounts (by destination), the host steps they need, and the rootfs
/// propagation their modes need.
type MountPlan = (Vec<(String, Value)>, Vec<HostPrep>, Option<&'static str>);

/// The container's volume mounts, in containerd's order (fewer path parts first), with the
/// rootfs propagation their modes need.
fn volume_mounts(
    req: &ContainerRequest,
    env: &[(String, String)],
    host_facts: &HostFacts,
    facts: &PodFacts,
) -> Result<MountPlan, SpecError> {
    let mut mounts = Vec::new();
    let mut host = Vec::new();
    let mut rootfs_propagation: Option<&'static str> = None;
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    for vm in req.container.volume_mounts.iter().flatten() {
        let vol = req
            .pod_spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == vm.name)
            .ok_or_else(|| invalid(format!("volumeMount {}: no such volume", vm.name)))?;
        let (source, is_file, always_ro) = volume_source(req, vol, facts, &mut host)?;
        let sub = sub_path(vm, &lookup)?;
        let source = match sub {
            None => source,
            Some(sub) if !is_file => {
                let p = source.join(&sub);
                // the files of a read-only volume are there (a subPath of a ConfigMap key is
                // its file then, and is not updated, as the kubelet's)
                if !always_ro {
                    host.push(HostPrep::CreateDir(p.clone()));
                }
                p
            }
            Some(sub) => {
                return Err(invalid(format!(
                    "volumeMount {}: invalid subPath {sub}",
                    vm.name
                )))
            }
        };
        if !vm.mount_path.starts_with('/') {
            return Err(invalid(format!(
                "volumeMount {}: mountPath {} is not absolute",
                vm.name, vm.mount_path
            )));
        }
        let propagation = match vm.mount_propagation.as_deref().unwrap_or("None") {
            "None" => "rprivate",
            "HostToContainer" => {
                check_propagation(&host_facts.mountinfo, &source, false)?;
                if rootfs_propagation != Some("rshared") {
                    rootfs_propagation = Some("rslave");
                }
                "rslave"
            }
            "Bidirectional" => {
                check_propagation(&host_facts.mountinfo, &source, true)?;
                rootfs_propagation = Some("rshared");
                "rshared"
            }
            other => {
                return Err(invalid(format!(
                    "volumeMount {}: unknown mountPropagation {other}",
                    vm.name
                )))
            }
        };
        let ro = if vm.read_only == Some(true) || always_ro {
            "ro"
        } else {
            "rw"
        };
        mounts.push((
            vm.mount_path.clone(),
            json!({
                "destination": vm.mount_path,
                "type": "bind",
                "source": source,
                "options": ["rbind", propagation, ro],
            }),
        ));
    }
    Ok((mounts, host, rootfs_propagation))
}

/// subPath, or subPathExpr expanded with the container's environment.
fn sub_path(
    vm: &VolumeMount,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, SpecError> {
    let sub = match (
        vm.sub_path.as_deref().filter(|s| !s.is_empty()),
        vm.sub_path_expr.as_deref().filter(|s| !s.is_empty()),
    ) {
        (Some(s), _) => s.to_string(),
        (None, Some(expr)) => downward::expand(expr, lookup),
        (None, None) => return Ok(None),
    };
    if !safe_sub_path(&sub) {
        return Err(invalid(format!(
            "volumeMount {}: invalid subPath {sub}",
            vm.name
        )));
    }
    Ok(Some(sub))
}

/// Where the runtime keeps a container's termination-message file on the host.
pub fn termination_log(state_dir: &Path, container_id: &str) -> PathBuf {
    state_dir
        .join("containers")
        .join(container_id)
        .join("termination-log")
}

/// The files of a pod the runtime writes (resolv.conf, hosts, hostname), under its directory.
pub fn pod_file(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("etc").join(name)
}

/// containerd's default mounts, without /run (its CRI plugin removes it), plus the cgroup
/// filesystem read-only as the CRI plugin adds it.
fn default_mounts(privileged: bool) -> Vec<Value> {
    let sys_ro = if privileged { "rw" } else { "ro" };
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_ro]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", sys_ro]}),
    ]
}

/// The number of parts of a mount destination (containerd's orderedMounts).
fn parts(dest: &str) -> usize {
    Path::new(dest).components().count()
}

/// Builds the OCI runtime spec for `req`, from its container, its image's config (Entrypoint,
/// Cmd, Env, WorkingDir, User) and the node's facts; `namespace` is the containerd namespace,
/// `state_dir` where the runtime keeps per-container files.
pub fn build(
    req: &ContainerRequest,
    namespace: &str,
    state_dir: &Path,
    host_facts: &HostFacts,
) -> Result<SpecPlan, SpecError> {
    let refused = crate::core::support::refusals(&req.pod_spec, "spec");
    if let Some(e) = refused.first() {
        return Err(config(e.to_string()));
    }
    let c = &req.container;
    let pod = &req.pod_spec;
    let image = &req.image.config;
    let sc = c.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let host_network = pod.host_network.unwrap_or(false);
    let host_pid = pod.host_pid.unwrap_or(false);
    let host_ipc = pod.host_ipc.unwrap_or(false);
    let facts = facts(req, host_facts);

    check_run_as_non_root(req, image)?;
    let hostname = dns::pod_hostname(pod, &req.pod.name, &req.hostname);
    let env = env(req, image, &hostname, host_facts)?;
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let args: Vec<String> = process_args(c, image)
        .iter()
        .map(|a| downward::expand(a, &lookup))
        .collect();
    if args.is_empty() {
        return Err(invalid(
            "no command: neither the container nor the image names one",
        ));
    }
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| {
            image["WorkingDir"]
                .as_str()
                .filter(|w| !w.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "/".to_string());
    let (uid, gid) = user(pod, c, image);
    let psc = pod.security_context.as_ref();
    let mut groups: Vec<i64> = psc
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default();
    if let Some(g) = psc.and_then(|s| s.fs_group) {
        groups.push(g);
    }
    groups.sort_unstable();
    groups.dedup();
    groups.retain(|g| *g != gid);
    let caps = capabilities(c, privileged);
    // the kubelet asks for no_new_privs only when allowPrivilegeEscalation is false
    let no_new_privs = !privileged && sc.and_then(|s| s.allow_privilege_escalation) == Some(false);

    let mut namespaces = Vec::new();
    if !host_pid {
        namespaces.push(json!({"type": "pid"}));
    }
    if !host_ipc {
        let mut ns = json!({"type": "ipc"});
        if let Some(p) = &req.sandbox.ipc_ns {
            ns["path"] = json!(p);
        }
        namespaces.push(ns);
    }
    if !host_network {
        namespaces.push(json!({"type": "uts"}));
    }
    namespaces.push(json!({"type": "mount"}));
    if !host_network {
        let mut ns = json!({"type": "network"});
        if let Some(p) = &req.sandbox.netns {
            ns["path"] = json!(p);
        }
        namespaces.push(ns);
    }

    let (vol_mounts, mut host, rootfs_propagation) = volume_mounts(req, &env, host_facts, &facts)?;
    // the pod's /etc files and the termination-message file, unless a volume is mounted there
    let mut files: Vec<(String, Value)> = Vec::new();
    let etc_ro = if sc.and_then(|s| s.read_only_root_filesystem) == Some(true) {
        "ro"
    } else {
        "rw"
    };
    let dns_config = dns::pod_dns(pod, &host_facts.resolv_conf);
    let pod_ips = facts.pod_ips;
    for (dest, name, content) in [
        (
            "/etc/hosts",
            "hosts",
            dns::hosts_file(pod, pod_ips, &hostname, &host_facts.hosts),
        ),
        (
            "/etc/resolv.conf",
            "resolv.conf",
            dns::resolv_conf(&dns_config, &host_facts.resolv_conf),
        ),
        ("/etc/hostname", "hostname", format!("{hostname}\n")),
    ] {
        let path = pod_file(&req.sandbox.pod_dir, name);
        host.push(HostPrep::WriteFile {
            path: path.clone(),
            content,
            mode: 0o644,
        });
        files.push((
            dest.to_string(),
            json!({"destination": dest, "type": "bind", "source": path, "options": ["rbind", "rprivate", etc_ro]}),
        ));
    }
    let term_path = c
        .termination_message_path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/dev/termination-log".into());
    let term_file = termination_log(state_dir, &req.id);
    host.push(HostPrep::WriteFile {
        path: term_file.clone(),
        content: String::new(),
        mode: 0o666,
    });
    files.push((
        term_path.clone(),
        json!({"destination": term_path, "type": "bind", "source": term_file, "options": ["rbind", "rprivate", "rw"]}),
    ));

    let mut supplied: Vec<(String, Value)> = vol_mounts;
    for (dest, m) in files {
        if !supplied
            .iter()
            .any(|(d, _)| Path::new(d) == Path::new(&dest))
        {
            supplied.push((dest, m));
        }
    }
    supplied.sort_by_key(|(d, _)| parts(d));
    let mut mounts: Vec<Value> = default_mounts(privileged)
        .into_iter()
        .filter(|m| {
            let dest = m["destination"].as_str().unwrap_or("");
            !supplied
                .iter()
                .any(|(d, _)| Path::new(d) == Path::new(dest))
        })
        .collect();
    if host_ipc {
        // the node's /dev/shm, as containerd's CRI plugin gives hostIPC pods
        for m in mounts.iter_mut().filter(|m| m["destination"] == "/dev/shm") {
            *m = json!({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm", "options": ["rbind", "rprivate", "rw"]});
        }
    }
    mounts.extend(supplied.into_iter().map(|(_, m)| m));

    let mut resources = resources(req)?;
    if privileged {
        resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
    }
    let mut linux = json!({
        "resources": resources,
        "cgroupsPath": super::cgroup::path(namespace, &req.id),
        "namespaces": namespaces,
    });
    let unmasked = sc.and_then(|s| s.proc_mount.as_deref()) == Some("Unmasked");
    if !privileged && !unmasked {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }
    if let Some(p) = rootfs_propagation {
        linux["rootfsPropagation"] = json!(p);
    }
    let sysctls = sysctls(pod, host_facts)?;
    if !sysctls.is_empty() {
        linux["sysctl"] = json!(sysctls);
    }
    if let Some(profile) = seccomp_profile(req, &caps, privileged, host_facts)? {
        linux["seccomp"] = profile;
    }

    let mut user = json!({"uid": uid, "gid": gid});
    if !groups.is_empty() {
        user["additionalGids"] = json!(groups);
    }
    let mut spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": user,
            "args": args,
            "env": env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": no_new_privs,
            "oomScoreAdj": oom_score_adj(req, host_facts.node.memory_bytes)
                .max(host_facts.oom_score_adj_floor.unwrap_or(i64::MIN)),
        },
        "root": {
            "path": "rootfs",
            "readonly": sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
        },
        "mounts": mounts,
        "linux": linux,
    });
    if !host_network {
        spec["hostname"] = json!(hostname);
    }
    Ok(SpecPlan { spec, host })
}

/// What is at `path` (following symlinks), as the kubelet's GetFileType names it.
fn file_type(path: &Path) -> std::io::Result<Option<PathType>> {
    use std::os::unix::fs::FileTypeExt;
    let t = std::fs::metadata(path)?.file_type();
    Ok(if t.is_dir() {
        Some(PathType::Directory)
    } else if t.is_file() {
        Some(PathType::File)
    } else if t.is_socket() {
        Some(PathType::Socket)
    } else if t.is_char_device() {
        Some(PathType::CharDevice)
    } else if t.is_block_device() {
        Some(PathType::BlockDevice)
    } else {
        None
    })
}

/// Whether a tmpfs is mounted on `path`.
fn is_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// fsGroup ownership of `dir` and everything in it (the kubelet's SetVolumeOwnership).
fn own(dir: &Path, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::lchown(dir, None, Some(gid))?;
    let mode = meta.permissions().mode();
    let want = if meta.is_dir() {
        mode | 0o070 | 0o2000
    } else {
        mode | 0o060
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(want & 0o7777))?;
    if meta.is_dir() {
        for e in std::fs::read_dir(dir)? {
            own(&e?.path(), gid)?;
        }
    }
    Ok(())
}

/// Performs the host steps of a plan (creating hostPath/emptyDir directories, checking hostPath
/// types, writing the pod's files).
pub fn prepare_host(steps: &[HostPrep]) -> Result<(), SpecError> {
    use std::os::unix::fs::PermissionsExt;
    let host = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| SpecError::Host { op, path, source }
    };
    for s in steps {
        match s {
            HostPrep::CreateDir(p) => {
                std::fs::create_dir_all(p).map_err(host("create directory", p))?
            }
            HostPrep::Atomic { dir, files, gid } => {
                configvol::write_atomic(dir, files, *gid).map_err(host("write volume", dir))?;
            }
            HostPrep::CreateFile(p) => {
                if !p.exists() {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .map_err(host("create file", p))?;
                }
            }
            HostPrep::Check { volume, path, want } => {
                let failed = |m: String| {
                    SpecError::Mount(format!(
                        "MountVolume.SetUp failed for volume {volume:?} : {m}"
                    ))
                };
                let p = path.display();
                let (desc, _) = want.describe();
                if !path.exists() {
                    return Err(failed(format!("hostPath {p} doesn't exist")));
                }
                match file_type(path) {
                    Ok(Some(t)) if t == *want => {}
                    Ok(Some(t)) => {
                        return Err(failed(format!(
                            "hostPath type check failed: {p} is not a {desc}, it's a {}",
                            t.describe().1
                        )))
                    }
                    Ok(None) => {
                        return Err(failed(format!(
                            "hostPath type check failed, {p} is not a {desc}, unable to determine its type: only recognise file, directory, socket, block device and character device"
                        )))
                    }
                    Err(e) => {
                        return Err(failed(format!(
                            "hostPath type check failed, {p} is not a {desc}, unable to determine its type: {e}"
                        )))
                    }
                }
            }
            HostPrep::WriteFile {
                path,
                content,
                mode,
            } => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(host("create directory", parent))?;
                }
                // a new file beside it, renamed over: a reader never sees half a file
                let tmp = path.with_extension("dsa-new");
                std::fs::write(&tmp, content).map_err(host("write", &tmp))?;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*mode))
                    .map_err(host("chmod", &tmp))?;
                std::fs::rename(&tmp, path).map_err(host("rename", path))?;
            }
            HostPrep::Tmpfs { path, size } => {
                std::fs::create_dir_all(path).map_err(host("create directory", path))?;
                if !is_tmpfs(path) {
                    let data = match size {
                        Some(s) => format!("mode=1777,size={s}"),
                        None => "mode=1777".to_string(),
                    };
                    nix::mount::mount(
                        Some("tmpfs"),
                        path,
                        Some("tmpfs"),
                        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                        Some(data.as_str()),
                    )
                    .map_err(|e| SpecError::Host {
                        op: "mount tmpfs on",
                        path: path.clone(),
                        source: e.into(),
                    })?;
                }
            }
            HostPrep::Own { path, gid } => own(path, *gid).map_err(host("set fsGroup on", path))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{PodMeta, SandboxInfo};

    const MOUNTINFO: &str = "\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
28 27 0:5 / /proc rw,nosuid - proc proc rw
29 27 0:6 / /sys rw,nosuid shared:2 - sysfs sysfs rw
30 27 0:40 / /srv/slave rw master:7 - tmpfs t rw
31 27 0:41 / /srv/private rw - tmpfs t rw";

    fn facts() -> HostFacts {
        HostFacts {
            node: NodeCapacity {
                cpu_milli: 2000,
                memory_bytes: 1 << 30,
                ephemeral_storage_bytes: 10 << 30,
            },
            hostname: "node-1".into(),
            resolv_conf: "nameserver 192.0.2.53\n".into(),
            hosts: "127.0.0.1 localhost node-1\n".into(),
            mountinfo: MOUNTINFO.into(),
            ..Default::default()
        }
    }

    fn req(pod: Value, container: Value) -> ContainerRequest {
        ContainerRequest {
            id: "c1".into(),
            labels: Default::default(),
            pod_spec: serde_json::from_value(pod).unwrap(),
            container: serde_json::from_value(container).unwrap(),
            sandbox: SandboxInfo {
                netns: Some(PathBuf::from("/state/netns/u1")),
                ipc_ns: Some(PathBuf::from("/state/ipcns/u1")),
                pod_dir: PathBuf::from("/state/pods/u1"),
                ips: vec!["10.1.0.5".into()],
            },
            image: crate::runtime::PulledImage {
                info: crate::runtime::ImageInfo {
                    reference: "img".into(),
                    digest: "sha256:0".into(),
                },
                config: Value::Null,
                chain_id: "sha256:1".into(),
            },
            hostname: "web-abc".into(),
            log_path: PathBuf::from("/log"),
            pod: PodMeta {
                name: "web-abc".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                host_ips: vec!["192.0.2.2".into()],
                ..Default::default()
            },
        }
    }

    fn build_with(r: &ContainerRequest, f: &HostFacts) -> Result<SpecPlan, SpecError> {
        build(r, "ns", Path::new("/state"), f)
    }

    fn spec(pod: Value, container: Value, image: Value) -> Value {
        let mut r = req(pod, container);
        r.image.config = image;
        build_with(&r, &facts()).unwrap().spec
    }

    fn base() -> Value {
        json!({"containers": []})
    }

    fn err(pod: Value, container: Value) -> SpecError {
        match build_with(&req(pod, container.clone()), &facts()) {
            Err(e) => e,
            Ok(_) => panic!("{container} built"),
        }
    }

    fn bind_mounts(s: &Value) -> Vec<(String, String, Vec<String>)> {
        s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "bind")
            .map(|m| {
                (
                    m["destination"].as_str().unwrap().into(),
                    m["source"].as_str().unwrap().into(),
                    strings(&m["options"]),
                )
            })
            .collect()
    }

    #[test]
    fn process_args_follow_kubernetes() {
        let image = json!({"Entrypoint": ["/ep"], "Cmd": ["cmd1", "cmd2"]});
        for (container, want) in [
            (json!({"name": "c"}), vec!["/ep", "cmd1", "cmd2"]),
            (json!({"name": "c", "command": ["/bin/x"]}), vec!["/bin/x"]),
            (json!({"name": "c", "args": ["a"]}), vec!["/ep", "a"]),
            (
                json!({"name": "c", "command": ["/bin/x"], "args": ["a"]}),
                vec!["/bin/x", "a"],
            ),
            (
                json!({"name": "c", "command": [], "args": []}),
                vec!["/ep", "cmd1", "cmd2"],
            ),
        ] {
            let c: Container = serde_json::from_value(container.clone()).unwrap();
            assert_eq!(process_args(&c, &image), want, "{container}");
        }
        let none = build_with(&req(base(), json!({"name": "c"})), &facts());
        assert!(matches!(none, Err(SpecError::Invalid(m)) if m.starts_with("no command")));
        // $(VAR) in command and args from the container's environment
        let s = spec(
            base(),
            json!({"name": "c", "command": ["/bin/x", "--addr=$(POD_IP):$(PORT)", "$$(PORT)"],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "PORT", "value": "9100"}]}),
            json!({}),
        );
        assert_eq!(
            s["process"]["args"],
            json!(["/bin/x", "--addr=10.1.0.5:9100", "$(PORT)"])
        );
    }

    #[test]
    fn defaults_are_containerds() {
        let s = spec(
            base(),
            json!({"name": "c", "command": ["sh"]}),
            json!({"Env": ["A=1"]}),
        );
        assert_eq!(s["root"], json!({"path": "rootfs", "readonly": false}));
        assert_eq!(s["process"]["cwd"], "/");
        assert_eq!(s["process"]["user"], json!({"uid": 0, "gid": 0}));
        assert_eq!(
            s["process"]["capabilities"]["bounding"],
            json!(DEFAULT_CAPS)
        );
        // the CRI plugin removes containerd's default rlimits; no_new_privs only when asked
        assert!(s["process"].get("rlimits").is_none());
        assert_eq!(s["process"]["noNewPrivileges"], false);
        assert_eq!(s["process"]["oomScoreAdj"], 1000, "BestEffort");
        assert!(
            s["linux"].get("seccomp").is_none(),
            "Unconfined unless asked"
        );
        assert_eq!(s["hostname"], "web-abc");
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network"]);
        assert_eq!(s["linux"]["namespaces"][1]["path"], "/state/ipcns/u1");
        assert_eq!(s["linux"]["namespaces"][4]["path"], "/state/netns/u1");
        assert_eq!(s["linux"]["maskedPaths"], json!(MASKED_PATHS));
        assert_eq!(s["linux"]["readonlyPaths"], json!(READONLY_PATHS));
        assert_eq!(s["linux"]["cgroupsPath"], "/daemonset-agent/ns/c1");
        let dests: Vec<&str> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/etc/hostname",
                "/dev/termination-log",
            ]
        );
        assert!(s["mounts"][5]["options"]
            .as_array()
            .unwrap()
            .contains(&json!("ro")));
        // no PATH in the image: containerd's default PATH first; HOSTNAME as the CRI plugin sets it
        assert_eq!(
            s["process"]["env"],
            json!([DEFAULT_PATH, "HOSTNAME=web-abc", "A=1"])
        );
    }

    #[test]
    fn env_user_and_workdir() {
        let image =
            json!({"Env": ["PATH=/bin", "A=image"], "User": "1000:2000", "WorkingDir": "/w"});
        let cases = [
            (
                base(),
                json!({"name": "c", "command": ["x"]}),
                (1000, 2000),
                "/w",
            ),
            (
                base(),
                json!({"name": "c", "command": ["x"], "workingDir": "/o"}),
                (1000, 2000),
                "/o",
            ),
            (
                json!({"containers": [], "securityContext": {"runAsUser": 5, "runAsGroup": 6}}),
                json!({"name": "c", "command": ["x"]}),
                (5, 6),
                "/w",
            ),
            (
                json!({"containers": [], "securityContext": {"runAsUser": 5, "runAsGroup": 6}}),
                json!({"name": "c", "command": ["x"], "securityContext": {"runAsUser": 7}}),
                (7, 6),
                "/w",
            ),
        ];
        for (pod, c, (uid, gid), cwd) in cases {
            let s = spec(pod, c.clone(), image.clone());
            assert_eq!(s["process"]["user"], json!({"uid": uid, "gid": gid}), "{c}");
            assert_eq!(s["process"]["cwd"], cwd, "{c}");
        }
        let s = spec(
            base(),
            json!({"name": "c", "command": ["x"]}),
            json!({"User": "nobody"}),
        );
        assert_eq!(s["process"]["user"], json!({"uid": 0, "gid": 0}));
        let s = spec(
            base(),
            json!({"name": "c", "command": ["x"], "env": [{"name": "A", "value": "mine"}, {"name": "B"}]}),
            image,
        );
        assert_eq!(
            s["process"]["env"],
            json!(["HOSTNAME=web-abc", "PATH=/bin", "A=mine", "B="])
        );
        match err(
            base(),
            json!({"name": "c", "command": ["x"], "env": [{"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
        ) {
            SpecError::Config(reason) => {
                // the agent found no such Secret (CreateContainerConfigError)
                assert_eq!(reason, "secret \"s\" not found")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn run_as_non_root_is_checked() {
        let pod = json!({"containers": [], "securityContext": {"runAsNonRoot": true}});
        let build_image = |c: Value, image: Value| {
            let mut r = req(pod.clone(), c);
            r.image.config = image;
            build_with(&r, &facts())
        };
        let ok = build_image(
            json!({"name": "c", "command": ["x"]}),
            json!({"User": "65534"}),
        );
        assert!(ok.is_ok());
        let ok = build_image(
            json!({"name": "c", "command": ["x"], "securityContext": {"runAsUser": 1000}}),
            json!({}),
        );
        assert!(ok.is_ok());
        for (c, image, want) in [
            (json!({"name": "c", "command": ["x"]}), json!({}), "container has runAsNonRoot and image will run as root (pod: \"web-abc_default(u1)\", container: c)"),
            (json!({"name": "c", "command": ["x"]}), json!({"User": "0"}), "image will run as root"),
            (json!({"name": "c", "command": ["x"]}), json!({"User": "nobody"}), "image has non-numeric user (nobody), cannot verify user is non-root"),
            (json!({"name": "c", "command": ["x"], "securityContext": {"runAsUser": 0}}), json!({"User": "1"}), "container's runAsUser breaks non-root policy"),
        ] {
            match build_image(c.clone(), image) {
                Err(SpecError::Config(m)) => assert!(m.contains(want), "{c}: {m}"),
                other => panic!("{c}: {other:?}"),
            }
        }
    }

    #[test]
    fn groups_and_fs_group() {
        let pod = json!({"containers": [], "securityContext": {"runAsGroup": 3000, "supplementalGroups": [4000, 3000, 5000], "fsGroup": 2000},
            "volumes": [{"name": "tmp", "emptyDir": {}}]});
        let plan = build_with(
            &req(pod, json!({"name": "c", "command": ["x"], "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]})),
            &facts(),
        )
        .unwrap();
        assert_eq!(
            plan.spec["process"]["user"],
            json!({"uid": 0, "gid": 3000, "additionalGids": [2000, 4000, 5000]})
        );
        assert!(plan.host.contains(&HostPrep::Own {
            path: "/state/pods/u1/volumes/tmp".into(),
            gid: 2000
        }));
        // and on the host: group-owned, group-writable, setgid
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("v");
        std::fs::create_dir(&vol).unwrap();
        std::fs::write(vol.join("f"), "x").unwrap();
        prepare_host(&[HostPrep::Own {
            path: vol.clone(),
            gid: 2000,
        }])
        .unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&vol).unwrap();
        assert_eq!((m.gid(), m.mode() & 0o2070), (2000, 0o2070));
        assert_eq!(std::fs::metadata(vol.join("f")).unwrap().gid(), 2000);
    }

    #[test]
    fn resources() {
        for (res, want) in [
            (
                json!({"limits": {"cpu": "100m", "memory": "200Mi"}}),
                json!({"cpu": {"quota": 10000, "period": 100000, "shares": 102}, "memory": {"limit": 209715200}}),
            ),
            (
                json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "2"}}),
                json!({"cpu": {"quota": 200000, "period": 100000, "shares": 256}, "memory": null}),
            ),
            (
                json!({"requests": {"cpu": "1"}}),
                json!({"cpu": {"shares": 1024}, "memory": null}),
            ),
            (
                json!({"limits": {"memory": "1Gi"}}),
                json!({"cpu": null, "memory": {"limit": 1073741824}}),
            ),
            (json!({}), json!({"cpu": null, "memory": null})),
        ] {
            let s = spec(
                base(),
                json!({"name": "c", "command": ["x"], "resources": res.clone()}),
                json!({}),
            );
            let r = &s["linux"]["resources"];
            assert_eq!(r["cpu"], want["cpu"], "{res}");
            assert_eq!(r["memory"], want["memory"], "{res}");
            assert_eq!(r["devices"], json!([{"allow": false, "access": "rwm"}]));
        }
        let bad = build_with(
            &req(
                base(),
                json!({"name": "c", "command": ["x"], "resources": {"limits": {"cpu": "lots"}}}),
            ),
            &facts(),
        );
        assert!(
            matches!(bad, Err(SpecError::Quantity { what: "cpu limit", value, .. }) if value == "lots")
        );
        // OOM score by QoS: Guaranteed, Burstable by the share of the node's memory
        let oom = |res: Value| {
            let c = json!({"name": "c", "command": ["x"], "resources": res});
            spec(json!({"containers": [c.clone()]}), c, json!({}))["process"]["oomScoreAdj"].clone()
        };
        assert_eq!(oom(json!({"limits": {"cpu": "1", "memory": "1Gi"}})), -997);
        // without CAP_SYS_RESOURCE, not below the agent's own (containerd's restriction)
        let c = json!({"name": "c", "command": ["x"],
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}});
        let restricted = HostFacts {
            oom_score_adj_floor: Some(0),
            ..facts()
        };
        let s = build_with(&req(json!({"containers": [c.clone()]}), c), &restricted)
            .unwrap()
            .spec;
        assert_eq!(s["process"]["oomScoreAdj"], 0);
        let status = |eff: &str| format!("Name:\tagent\nCapEff:\t{eff}\n");
        assert_eq!(
            oom_score_adj_floor(&status("000001ffffffffff"), "0\n"),
            None
        );
        // a VM whose root lacks CAP_SYS_RESOURCE (bit 24), as this project's machines
        assert_eq!(
            oom_score_adj_floor(&status("000001fffeffffff"), "0\n"),
            Some(0)
        );
        assert_eq!(
            oom_score_adj_floor(&status("000001fffeffffff"), "-5\n"),
            Some(-5)
        );
        assert_eq!(oom_score_adj_floor("", "0"), None);
        // half of the node's 1 GiB
        assert_eq!(oom(json!({"requests": {"memory": "512Mi"}})), 500);
    }

    #[test]
    fn security_context() {
        let caps = |c: Value| -> Value {
            spec(
                base(),
                json!({"name": "c", "command": ["x"], "securityContext": c}),
                json!({}),
            )["process"]["capabilities"]["effective"]
                .clone()
        };
        let mut with_admin: Vec<&str> = DEFAULT_CAPS.to_vec();
        with_admin.push("CAP_NET_ADMIN");
        assert_eq!(
            caps(json!({"capabilities": {"add": ["NET_ADMIN"]}})),
            json!(with_admin)
        );
        assert_eq!(
            caps(json!({"capabilities": {"drop": ["ALL"], "add": ["CAP_NET_BIND_SERVICE"]}})),
            json!(["CAP_NET_BIND_SERVICE"])
        );
        let without_kill: Vec<&str> = DEFAULT_CAPS
            .iter()
            .copied()
            .filter(|c| *c != "CAP_KILL")
            .collect();
        assert_eq!(
            caps(json!({"capabilities": {"drop": ["kill"]}})),
            json!(without_kill)
        );
        assert_eq!(caps(json!({"privileged": true})), json!(ALL_CAPS));

        let s = spec(
            base(),
            json!({"name": "c", "command": ["x"], "securityContext": {"privileged": true, "readOnlyRootFilesystem": true}}),
            json!({}),
        );
        assert!(
            s["linux"].get("maskedPaths").is_none() && s["linux"].get("readonlyPaths").is_none()
        );
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["process"]["noNewPrivileges"], false);
        assert!(s["mounts"][5]["options"]
            .as_array()
            .unwrap()
            .contains(&json!("rw")));
        assert_eq!(
            s["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
        // allowPrivilegeEscalation: false is no_new_privs
        let s = spec(
            base(),
            json!({"name": "c", "command": ["x"], "securityContext": {"allowPrivilegeEscalation": false}}),
            json!({}),
        );
        assert_eq!(s["process"]["noNewPrivileges"], true);
    }

    #[test]
    fn proc_mount_unmasked() {
        let s = spec(
            base(),
            json!({"name": "c", "command": ["x"], "securityContext": {"procMount": "Unmasked"}}),
            json!({}),
        );
        assert!(
            s["linux"].get("maskedPaths").is_none() && s["linux"].get("readonlyPaths").is_none()
        );
        let s = spec(
            base(),
            json!({"name": "c", "command": ["x"], "securityContext": {"procMount": "Default"}}),
            json!({}),
        );
        assert_eq!(s["linux"]["maskedPaths"], json!(MASKED_PATHS));
    }

    #[test]
    fn seccomp_profiles() {
        let mut f = facts();
        f.seccomp_profiles.insert(
            "profiles/audit.json".into(),
            Ok(json!({"defaultAction": "SCMP_ACT_LOG"})),
        );
        f.seccomp_profiles
            .insert("missing.json".into(), Err("no such file".into()));
        let with = |pod_sc: Value, c_sc: Value| {
            let r = req(
                json!({"containers": [], "securityContext": pod_sc}),
                json!({"name": "c", "command": ["x"], "securityContext": c_sc}),
            );
            build_with(&r, &f)
        };
        let s = with(
            json!({"seccompProfile": {"type": "RuntimeDefault"}}),
            json!({}),
        )
        .unwrap()
        .spec;
        assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(
            s["linux"]["seccomp"],
            seccomp::default_profile(
                &DEFAULT_CAPS
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
            )
        );
        // the container's wins over the pod's
        let s = with(
            json!({"seccompProfile": {"type": "RuntimeDefault"}}),
            json!({"seccompProfile": {"type": "Unconfined"}}),
        )
        .unwrap()
        .spec;
        assert!(s["linux"].get("seccomp").is_none());
        let s = with(
            json!({}),
            json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"}}),
        )
        .unwrap()
        .spec;
        assert_eq!(
            s["linux"]["seccomp"],
            json!({"defaultAction": "SCMP_ACT_LOG"})
        );
        let e = with(
            json!({}),
            json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "missing.json"}}),
        );
        assert!(
            matches!(e, Err(SpecError::Config(m)) if m.contains("missing.json") && m.contains("no such file"))
        );
    }

    #[test]
    fn sysctls_are_checked() {
        let pod = |sysctls: Value, extra: Value| {
            let mut p = json!({"containers": [], "securityContext": {"sysctls": sysctls}});
            for (k, v) in extra.as_object().unwrap() {
                p[k] = v.clone();
            }
            p
        };
        let c = json!({"name": "c", "command": ["x"]});
        let s = spec(
            pod(
                json!([{"name": "net.ipv4.ip_local_port_range", "value": "1024 65000"},
                      {"name": "kernel/shm_rmid_forced", "value": "1"}]),
                json!({}),
            ),
            c.clone(),
            json!({}),
        );
        assert_eq!(
            s["linux"]["sysctl"],
            json!({"kernel.shm_rmid_forced": "1", "net.ipv4.ip_local_port_range": "1024 65000"})
        );
        let mut f = facts();
        f.allowed_unsafe_sysctls = vec!["net.core.*".into()];
        let r = req(
            pod(
                json!([{"name": "net.core.somaxconn", "value": "1024"}]),
                json!({}),
            ),
            c.clone(),
        );
        assert!(build_with(&r, &f).is_ok());
        for (p, want) in [
            (
                pod(
                    json!([{"name": "net.core.somaxconn", "value": "1"}]),
                    json!({}),
                ),
                "forbidden sysctl: \"net.core.somaxconn\" not allowlisted",
            ),
            (
                pod(
                    json!([{"name": "net.ipv4.tcp_syncookies", "value": "1"}]),
                    json!({"hostNetwork": true}),
                ),
                "not allowed with host net enabled",
            ),
            (
                pod(
                    json!([{"name": "kernel.shm_rmid_forced", "value": "1"}]),
                    json!({"hostIPC": true}),
                ),
                "not allowed with host ipc enabled",
            ),
        ] {
            match err(p.clone(), c.clone()) {
                SpecError::Config(m) => assert!(m.contains(want), "{p}: {m}"),
                other => panic!("{p}: {other:?}"),
            }
        }
    }

    #[test]
    fn host_network_shares_host_net_and_uts() {
        let s = spec(
            json!({"containers": [], "hostNetwork": true}),
            json!({"name": "c", "command": ["x"]}),
            json!({}),
        );
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "mount"]);
        assert!(s.get("hostname").is_none());
        // its pod IP is the node's, and its hostname is the node's
        let s = spec(
            json!({"containers": [], "hostNetwork": true}),
            json!({"name": "c", "command": ["x"], "env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}),
            json!({}),
        );
        assert!(s["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&json!("IP=192.0.2.2")));
    }

    #[test]
    fn pod_namespaces() {
        let kinds = |s: &Value| -> Vec<String> {
            s["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["type"].as_str().unwrap().to_string())
                .collect()
        };
        let c = json!({"name": "c", "command": ["x"]});
        let s = spec(
            json!({"containers": [], "hostPID": true}),
            c.clone(),
            json!({}),
        );
        assert_eq!(kinds(&s), ["ipc", "uts", "mount", "network"]);
        let s = spec(
            json!({"containers": [], "hostIPC": true}),
            c.clone(),
            json!({}),
        );
        assert_eq!(kinds(&s), ["pid", "uts", "mount", "network"]);
        let shm = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/dev/shm")
            .unwrap();
        assert_eq!(
            shm["source"], "/dev/shm",
            "the node's /dev/shm with hostIPC"
        );
        let s = spec(
            json!({"containers": [], "hostPID": true, "hostIPC": true, "hostNetwork": true}),
            c,
            json!({}),
        );
        assert_eq!(kinds(&s), ["mount"]);
    }

    #[test]
    fn mount_propagation_as_containerd_maps_it() {
        let pod = json!({"containers": [], "volumes": [
            {"name": "root", "hostPath": {"path": "/"}},
            {"name": "sys", "hostPath": {"path": "/sys"}},
            {"name": "slave", "hostPath": {"path": "/srv/slave/x"}},
            {"name": "private", "hostPath": {"path": "/srv/private"}}]});
        let with = |mounts: Value| {
            build_with(
                &req(
                    pod.clone(),
                    json!({"name": "c", "command": ["x"], "securityContext": {"privileged": true}, "volumeMounts": mounts}),
                ),
                &facts(),
            )
        };
        let s = with(json!([
            {"name": "root", "mountPath": "/host/root", "mountPropagation": "HostToContainer", "readOnly": true},
            {"name": "sys", "mountPath": "/host/sys", "mountPropagation": "None"},
            {"name": "slave", "mountPath": "/slave", "mountPropagation": "HostToContainer"}]))
        .unwrap()
        .spec;
        let m = bind_mounts(&s);
        let opts = |d: &str| m.iter().find(|(dest, _, _)| dest == d).unwrap().2.clone();
        assert_eq!(opts("/host/root"), ["rbind", "rslave", "ro"]);
        assert_eq!(opts("/host/sys"), ["rbind", "rprivate", "rw"]);
        assert_eq!(opts("/slave"), ["rbind", "rslave", "rw"]);
        assert_eq!(s["linux"]["rootfsPropagation"], "rslave");
        let s = with(json!([{"name": "root", "mountPath": "/host/root", "mountPropagation": "Bidirectional"}]))
            .unwrap()
            .spec;
        assert_eq!(
            bind_mounts(&s)
                .iter()
                .find(|x| x.0 == "/host/root")
                .unwrap()
                .2,
            ["rbind", "rshared", "rw"]
        );
        assert_eq!(s["linux"]["rootfsPropagation"], "rshared");
        let s = with(json!([{"name": "sys", "mountPath": "/s"}]))
            .unwrap()
            .spec;
        assert!(s["linux"].get("rootfsPropagation").is_none());
        // containerd's checks of the source mount
        for (mounts, want) in [
            (json!([{"name": "private", "mountPath": "/p", "mountPropagation": "HostToContainer"}]),
                "path \"/srv/private\" is mounted on \"/srv/private\" but it is not a shared or slave mount"),
            (json!([{"name": "slave", "mountPath": "/p", "mountPropagation": "Bidirectional"}]),
                "path \"/srv/slave/x\" is mounted on \"/srv/slave\" but it is not a shared mount"),
        ] {
            match with(mounts.clone()) {
                Err(SpecError::Invalid(m)) => assert_eq!(m, want),
                other => panic!("{mounts}: {other:?}"),
            }
        }
    }

    #[test]
    fn volumes() {
        let pod = json!({"containers": [], "volumes": [
            {"name": "logs", "hostPath": {"path": "/var/log", "type": "Directory"}},
            {"name": "made", "hostPath": {"path": "/srv/made", "type": "DirectoryOrCreate"}},
            {"name": "sock", "hostPath": {"path": "/run/x.sock", "type": "FileOrCreate"}},
            {"name": "conf", "hostPath": {"path": "/etc/x.conf", "type": "File"}},
            {"name": "any", "hostPath": {"path": "/opt"}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "cm", "configMap": {"name": "x"}}]});
        let mounts = json!([
            {"name": "logs", "mountPath": "/host/logs", "readOnly": true},
            {"name": "made", "mountPath": "/made"},
            {"name": "sock", "mountPath": "/x.sock"},
            {"name": "conf", "mountPath": "/x.conf"},
            {"name": "any", "mountPath": "/opt"},
            {"name": "tmp", "mountPath": "/tmp", "subPath": "a/b"},
            {"name": "tmp", "mountPath": "/data", "subPathExpr": "$(POD)"},
            {"name": "tmp", "mountPath": "/dev/shm"},
            {"name": "mem", "mountPath": "/mem"}]);
        let mut accepted = pod.clone();
        accepted["volumes"].as_array_mut().unwrap().pop();
        let plan = build_with(
            &req(
                accepted,
                json!({"name": "c", "command": ["x"], "volumeMounts": mounts,
                    "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}),
            ),
            &facts(),
        )
        .unwrap();
        let vm: Vec<(String, String, String)> = bind_mounts(&plan.spec)
            .into_iter()
            .filter(|(d, _, _)| !d.starts_with("/etc/") && d != "/dev/termination-log")
            .map(|(d, s, o)| (d, s, o[2].clone()))
            .collect();
        let t = |d: &str, s: &str, o: &str| (d.to_string(), s.to_string(), o.to_string());
        // in containerd's order: fewer path parts first
        assert_eq!(
            vm,
            [
                t("/made", "/srv/made", "rw"),
                t("/x.sock", "/run/x.sock", "rw"),
                t("/x.conf", "/etc/x.conf", "rw"),
                t("/opt", "/opt", "rw"),
                t("/tmp", "/state/pods/u1/volumes/tmp/a/b", "rw"),
                t("/data", "/state/pods/u1/volumes/tmp/web-abc", "rw"),
                t("/mem", "/state/pods/u1/volumes/mem", "rw"),
                t("/host/logs", "/var/log", "ro"),
                t("/dev/shm", "/state/pods/u1/volumes/tmp", "rw"),
            ]
        );
        // the emptyDir replaced the default /dev/shm tmpfs
        assert_eq!(
            plan.spec["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["destination"] == "/dev/shm")
                .count(),
            1
        );
        let volumes: Vec<&HostPrep> = plan
            .host
            .iter()
            .filter(|h| !matches!(h, HostPrep::WriteFile { .. }))
            .collect();
        let check = |volume: &str, path: &str, want| HostPrep::Check {
            volume: volume.into(),
            path: path.into(),
            want,
        };
        assert_eq!(
            volumes,
            [
                &check("logs", "/var/log", PathType::Directory),
                &HostPrep::CreateDir("/srv/made".into()),
                &check("made", "/srv/made", PathType::Directory),
                &HostPrep::CreateFile("/run/x.sock".into()),
                &check("sock", "/run/x.sock", PathType::File),
                &check("conf", "/etc/x.conf", PathType::File),
                &HostPrep::CreateDir("/state/pods/u1/volumes/tmp".into()),
                &HostPrep::CreateDir("/state/pods/u1/volumes/tmp/a/b".into()),
                &HostPrep::CreateDir("/state/pods/u1/volumes/tmp".into()),
                &HostPrep::CreateDir("/state/pods/u1/volumes/tmp/web-abc".into()),
                &HostPrep::CreateDir("/state/pods/u1/volumes/tmp".into()),
                &HostPrep::Tmpfs {
                    path: "/state/pods/u1/volumes/mem".into(),
                    size: Some(64 << 20)
                },
            ]
        );
        for (mount, needle) in [
            (
                json!({"name": "cm", "mountPath": "/cm"}),
                "configmap \"x\" not found",
            ),
            (json!({"name": "nope", "mountPath": "/x"}), "nope"),
            (
                json!({"name": "tmp", "mountPath": "/x", "subPath": "../escape"}),
                "../escape",
            ),
            (json!({"name": "tmp", "mountPath": "relative"}), "relative"),
        ] {
            let mut pod = pod.clone();
            if mount["name"] != "cm" {
                pod["volumes"].as_array_mut().unwrap().pop();
            }
            let r = build_with(
                &req(
                    pod,
                    json!({"name": "c", "command": ["x"], "volumeMounts": [mount.clone()]}),
                ),
                &facts(),
            );
            match r {
                Err(
                    SpecError::Invalid(reason)
                    | SpecError::Config(reason)
                    | SpecError::Mount(reason),
                ) => {
                    assert!(reason.contains(needle), "{reason}")
                }
                other => panic!("{mount}: {other:?}"),
            }
        }
    }

    #[test]
    fn dns_files_and_the_termination_log_are_mounted() {
        let pod = json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {"nameservers": ["203.0.113.1"]},
            "hostAliases": [{"ip": "198.51.100.7", "hostnames": ["foo"]}], "hostname": "custom"});
        let plan = build_with(
            &req(
                pod,
                json!({"name": "c", "command": ["x"], "terminationMessagePath": "/tmp/msg"}),
            ),
            &facts(),
        )
        .unwrap();
        let written = |p: &str| {
            plan.host
                .iter()
                .find_map(|h| match h {
                    HostPrep::WriteFile { path, content, .. } if path == Path::new(p) => {
                        Some(content.clone())
                    }
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{p} not written"))
        };
        assert_eq!(
            written("/state/pods/u1/etc/resolv.conf"),
            "nameserver 203.0.113.1\n"
        );
        assert!(written("/state/pods/u1/etc/hosts")
            .ends_with("10.1.0.5\tcustom\n\n# Entries added by HostAliases.\n198.51.100.7\tfoo\n"));
        assert_eq!(written("/state/pods/u1/etc/hostname"), "custom\n");
        assert_eq!(written("/state/containers/c1/termination-log"), "");
        assert_eq!(plan.spec["hostname"], "custom");
        let m = bind_mounts(&plan.spec);
        assert!(m.contains(&(
            "/tmp/msg".into(),
            "/state/containers/c1/termination-log".into(),
            vec!["rbind".into(), "rprivate".into(), "rw".into()]
        )));
        assert!(m
            .iter()
            .any(|(d, s, _)| d == "/etc/resolv.conf" && s == "/state/pods/u1/etc/resolv.conf"));
    }

    #[test]
    fn host_path_types_as_the_kubelet_checks_them() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("a/b");
        let file = dir.path().join("f");
        let sock = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        prepare_host(&[
            HostPrep::CreateDir(made.clone()),
            HostPrep::CreateFile(file.clone()),
        ])
        .unwrap();
        assert!(made.is_dir() && file.is_file());
        let check = |path: &Path, want| HostPrep::Check {
            volume: "v".into(),
            path: path.to_path_buf(),
            want,
        };
        prepare_host(&[
            check(&made, PathType::Directory),
            check(&file, PathType::File),
            check(&sock, PathType::Socket),
            check(Path::new("/dev/null"), PathType::CharDevice),
        ])
        .unwrap();
        let missing = dir.path().join("missing");
        let p = |x: &Path| x.display().to_string();
        for (step, want) in [
            (
                check(&missing, PathType::Directory),
                format!("hostPath {} doesn't exist", p(&missing)),
            ),
            (
                check(&made, PathType::File),
                format!(
                    "hostPath type check failed: {} is not a file, it's a Directory",
                    p(&made)
                ),
            ),
            (
                check(&file, PathType::Socket),
                format!(
                    "hostPath type check failed: {} is not a socket file, it's a File",
                    p(&file)
                ),
            ),
            (
                check(&file, PathType::BlockDevice),
                format!(
                    "hostPath type check failed: {} is not a block device, it's a File",
                    p(&file)
                ),
            ),
            (
                check(Path::new("/dev/null"), PathType::Directory),
                "hostPath type check failed: /dev/null is not a directory, it's a CharDevice"
                    .to_string(),
            ),
        ] {
            match prepare_host(&[step]) {
                Err(SpecError::Mount(reason)) => {
                    assert_eq!(
                        reason,
                        format!("MountVolume.SetUp failed for volume \"v\" : {want}")
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        // FileOrCreate makes no parent directories, as the kubelet's makeFile
        let orphan = dir.path().join("no/such/file");
        assert!(matches!(
            prepare_host(&[HostPrep::CreateFile(orphan)]),
            Err(SpecError::Host { .. })
        ));
    }
}
