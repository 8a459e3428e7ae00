//! The OCI runtime spec of a container, built as a pure function of the request and the image
//! config: containerd's default Linux spec (oci/spec.go) plus what Kubernetes' kubelet and CRI
//! plugin derive from a pod spec (process args, env, user, resources, capabilities, volumes).
//!
//! Host side effects (creating hostPath or emptyDir directories) are not done here: `build` returns
//! them as `HostPrep` steps and `prepare_host` performs them.
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{json, Value};

use super::{ContainerRequest, RuntimeError};
use crate::core::quantity::{cpu_quota_us, cpu_shares, Quantity, CPU_PERIOD_US};

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

pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];
pub const READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A host-side step the spec relies on, performed by `prepare_host` before the container starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPrep {
    /// Create the directory (and parents) if missing.
    CreateDir(PathBuf),
    /// Create an empty file (and parent directories) if missing.
    CreateFile(PathBuf),
    /// The path must be a directory; else the volume is invalid.
    RequireDir { volume: String, path: PathBuf },
    /// The path must be a regular file.
    RequireFile { volume: String, path: PathBuf },
}

/// The spec and the host steps it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecPlan {
    pub spec: Value,
    pub host: Vec<HostPrep>,
}

/// The cgroup of a container (cgroupfs; runc creates it under every v1 controller).
pub fn cgroups_path(namespace: &str, id: &str) -> String {
    format!("/daemonset-agent/{namespace}/{id}")
}

fn invalid(id: &str, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidSpec {
        id: id.to_string(),
        reason: reason.into(),
    }
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

/// uid, gid: securityContext (container over pod) else the image's numeric User, else 0.
fn user(pod: &PodSpec, c: &Container, image: &Value) -> (i64, i64) {
    let csc = c.security_context.as_ref();
    let psc = pod.security_context.as_ref();
    let image_user = image["User"].as_str().unwrap_or_default();
    let (img_uid, img_gid) = match image_user.split_once(':') {
        Some((u, g)) => (u.parse::<i64>().ok(), g.parse::<i64>().ok()),
        None => (image_user.parse::<i64>().ok(), None),
    };
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

fn env(req: &ContainerRequest, image: &Value) -> Result<Vec<String>, RuntimeError> {
    let mut out: Vec<(String, String)> = strings(&image["Env"])
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    for e in req.container.env.iter().flatten() {
        if e.value_from.is_some() {
            return Err(invalid(
                &req.id,
                format!("env {}: valueFrom is not supported", e.name),
            ));
        }
        let v = e.value.clone().unwrap_or_default();
        match out.iter_mut().find(|(k, _)| *k == e.name) {
            Some(slot) => slot.1 = v,
            None => out.push((e.name.clone(), v)),
        }
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        if let Some((k, v)) = DEFAULT_PATH.split_once('=') {
            out.insert(0, (k.to_string(), v.to_string()));
        }
    }
    Ok(out.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

fn quantity(
    id: &str,
    what: &str,
    q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
) -> Result<Quantity, RuntimeError> {
    Quantity::parse(&q.0).map_err(|e| invalid(id, format!("{what} {}: {e}", q.0)))
}

fn resources(req: &ContainerRequest) -> Result<Value, RuntimeError> {
    let mut res = json!({"devices": [{"allow": false, "access": "rwm"}]});
    let Some(r) = req.container.resources.as_ref() else {
        return Ok(res);
    };
    let limit = |name: &str| r.limits.as_ref().and_then(|l| l.get(name));
    let request = |name: &str| r.requests.as_ref().and_then(|l| l.get(name));
    let mut cpu = serde_json::Map::new();
    if let Some(q) = limit("cpu") {
        let milli = quantity(&req.id, "cpu limit", q)?.milli_value();
        cpu.insert("quota".into(), json!(cpu_quota_us(milli)));
        cpu.insert("period".into(), json!(CPU_PERIOD_US));
    }
    if let Some(q) = request("cpu").or(limit("cpu")) {
        let milli = quantity(&req.id, "cpu request", q)?.milli_value();
        cpu.insert("shares".into(), json!(cpu_shares(milli)));
    }
    if !cpu.is_empty() {
        res["cpu"] = Value::Object(cpu);
    }
    if let Some(q) = limit("memory") {
        let bytes = quantity(&req.id, "memory limit", q)?.value();
        res["memory"] = json!({ "limit": bytes });
    }
    Ok(res)
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

/// A relative path that stays inside its base (no `..`, not absolute).
fn safe_sub_path(sub: &str) -> bool {
    Path::new(sub)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn volume_mounts(req: &ContainerRequest) -> Result<(Vec<Value>, Vec<HostPrep>), RuntimeError> {
    let id = &req.id;
    let mut mounts = Vec::new();
    let mut host = Vec::new();
    for vm in req.container.volume_mounts.iter().flatten() {
        let vol = req
            .pod_spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == vm.name)
            .ok_or_else(|| invalid(id, format!("volumeMount {}: no such volume", vm.name)))?;
        let (source, is_file) = if let Some(hp) = &vol.host_path {
            let path = PathBuf::from(&hp.path);
            if !path.is_absolute() {
                return Err(invalid(
                    id,
                    format!("volume {}: hostPath {} is not absolute", vol.name, hp.path),
                ));
            }
            let kind = hp.type_.as_deref().unwrap_or("");
            let is_file = match kind {
                "" => false,
                "DirectoryOrCreate" => {
                    host.push(HostPrep::CreateDir(path.clone()));
                    false
                }
                "Directory" => {
                    host.push(HostPrep::RequireDir {
                        volume: vol.name.clone(),
                        path: path.clone(),
                    });
                    false
                }
                "FileOrCreate" => {
                    host.push(HostPrep::CreateFile(path.clone()));
                    true
                }
                "File" => {
                    host.push(HostPrep::RequireFile {
                        volume: vol.name.clone(),
                        path: path.clone(),
                    });
                    true
                }
                other => {
                    return Err(invalid(
                        id,
                        format!(
                            "volume {}: hostPath type {other} is not supported",
                            vol.name
                        ),
                    ))
                }
            };
            (path, is_file)
        } else if vol.empty_dir.is_some() {
            let path = req.sandbox.pod_dir.join("volumes").join(&vol.name);
            host.push(HostPrep::CreateDir(path.clone()));
            (path, false)
        } else {
            return Err(invalid(
                id,
                format!(
                    "volume {}: only hostPath and emptyDir are supported",
                    vol.name
                ),
            ));
        };
        let source = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            None => source,
            Some(sub) if safe_sub_path(sub) && !is_file => {
                let p = source.join(sub);
                host.push(HostPrep::CreateDir(p.clone()));
                p
            }
            Some(sub) => {
                return Err(invalid(
                    id,
                    format!("volumeMount {}: invalid subPath {sub}", vm.name),
                ))
            }
        };
        if !vm.mount_path.starts_with('/') {
            return Err(invalid(
                id,
                format!(
                    "volumeMount {}: mountPath {} is not absolute",
                    vm.name, vm.mount_path
                ),
            ));
        }
        let ro = if vm.read_only == Some(true) {
            "ro"
        } else {
            "rw"
        };
        mounts.push(json!({
            "destination": vm.mount_path,
            "type": "bind",
            "source": source,
            "options": ["rbind", "rprivate", ro],
        }));
    }
    Ok((mounts, host))
}

fn default_mounts(privileged: bool) -> Vec<Value> {
    let sys_ro = if privileged { "rw" } else { "ro" };
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_ro]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
    ]
}

/// Builds the OCI runtime spec for `req`. `image` is the image config's `config` object
/// (Entrypoint, Cmd, Env, WorkingDir, User); `namespace` is the containerd namespace.
pub fn build(
    req: &ContainerRequest,
    image: &Value,
    namespace: &str,
) -> Result<SpecPlan, RuntimeError> {
    let c = &req.container;
    let sc = c.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let host_network = req.pod_spec.host_network.unwrap_or(false);

    let args = process_args(c, image);
    if args.is_empty() {
        return Err(invalid(
            &req.id,
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
    let (uid, gid) = user(&req.pod_spec, c, image);
    let caps = capabilities(c, privileged);
    let no_new_privs = !privileged && sc.and_then(|s| s.allow_privilege_escalation) != Some(true);

    let mut namespaces = vec![json!({"type": "pid"}), json!({"type": "ipc"})];
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

    let (vol_mounts, host) = volume_mounts(req)?;
    let mut mounts: Vec<Value> = default_mounts(privileged)
        .into_iter()
        .filter(|m| {
            !vol_mounts
                .iter()
                .any(|v| v["destination"] == m["destination"])
        })
        .collect();
    mounts.extend(vol_mounts);

    let mut resources = resources(req)?;
    if privileged {
        resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
    }
    let mut linux = json!({
        "resources": resources,
        "cgroupsPath": cgroups_path(namespace, &req.id),
        "namespaces": namespaces,
    });
    if !privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }

    let mut spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env(req, image)?,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": no_new_privs,
        },
        "root": {
            "path": "rootfs",
            "readonly": sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
        },
        "mounts": mounts,
        "linux": linux,
    });
    if !host_network && !req.hostname.is_empty() {
        spec["hostname"] = json!(req.hostname);
    }
    Ok(SpecPlan { spec, host })
}

/// Performs the host steps of a plan (creating hostPath/emptyDir directories, checking required
/// ones). `id` names the container in errors.
pub fn prepare_host(id: &str, steps: &[HostPrep]) -> Result<(), RuntimeError> {
    for s in steps {
        match s {
            HostPrep::CreateDir(p) => std::fs::create_dir_all(p)
                .map_err(|e| invalid(id, format!("create directory {}: {e}", p.display())))?,
            HostPrep::CreateFile(p) => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        invalid(id, format!("create directory {}: {e}", parent.display()))
                    })?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| invalid(id, format!("create file {}: {e}", p.display())))?;
            }
            HostPrep::RequireDir { volume, path } => {
                if !path.is_dir() {
                    return Err(invalid(
                        id,
                        format!(
                            "volume {volume}: hostPath {} is not a directory",
                            path.display()
                        ),
                    ));
                }
            }
            HostPrep::RequireFile { volume, path } => {
                if !path.is_file() {
                    return Err(invalid(
                        id,
                        format!("volume {volume}: hostPath {} is not a file", path.display()),
                    ));
                }
            }
        }
    }
    Ok(())
}
