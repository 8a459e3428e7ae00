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

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
            // a terminal from the shim's console (its size comes with the first attach's resize)
            "terminal": req.container.tty.unwrap_or(false),
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

mod host;
mod mounts;
mod security;
#[cfg(test)]
mod tests;

pub use host::prepare_host;
use mounts::*;
pub use mounts::{pod_file, termination_log};
use security::*;
pub use security::{ALL_CAPS, DEFAULT_CAPS, MASKED_PATHS, READONLY_PATHS, SAFE_SYSCTLS};
