//! The OCI runtime spec of a container, built as a pure function of the request and the image
//! config: containerd's default Linux spec (oci/spec.go) plus what Kubernetes' kubelet and CRI
//! plugin derive from a pod spec (process args, env, user, resources, capabilities, volumes).
//!
//! Host side effects (creating hostPath or emptyDir directories) are not done here: `build` returns
//! them as `HostPrep` steps and `prepare_host` performs them.
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{json, Value};

use super::ContainerRequest;
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

/// Why a container's spec cannot be built or its host side prepared.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The pod spec asks for what this runtime does not do, or for something that makes no sense.
    #[error("{0}")]
    Invalid(String),
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

fn env(req: &ContainerRequest, image: &Value) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<(String, String)> = strings(&image["Env"])
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    for e in req.container.env.iter().flatten() {
        if e.value_from.is_some() {
            return Err(invalid(format!(
                "env {}: valueFrom is not supported",
                e.name
            )));
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

fn volume_mounts(req: &ContainerRequest) -> Result<(Vec<Value>, Vec<HostPrep>), SpecError> {
    let mut mounts = Vec::new();
    let mut host = Vec::new();
    for vm in req.container.volume_mounts.iter().flatten() {
        let vol = req
            .pod_spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == vm.name)
            .ok_or_else(|| invalid(format!("volumeMount {}: no such volume", vm.name)))?;
        let (source, is_file) = if let Some(hp) = &vol.host_path {
            let path = PathBuf::from(&hp.path);
            if !path.is_absolute() {
                return Err(invalid(format!(
                    "volume {}: hostPath {} is not absolute",
                    vol.name, hp.path
                )));
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
                    return Err(invalid(format!(
                        "volume {}: hostPath type {other} is not supported",
                        vol.name
                    )))
                }
            };
            (path, is_file)
        } else if vol.empty_dir.is_some() {
            let path = req.sandbox.pod_dir.join("volumes").join(&vol.name);
            host.push(HostPrep::CreateDir(path.clone()));
            (path, false)
        } else {
            return Err(invalid(format!(
                "volume {}: only hostPath and emptyDir are supported",
                vol.name
            )));
        };
        let source = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            None => source,
            Some(sub) if safe_sub_path(sub) && !is_file => {
                let p = source.join(sub);
                host.push(HostPrep::CreateDir(p.clone()));
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

/// Builds the OCI runtime spec for `req`, from its container and its image's config
/// (Entrypoint, Cmd, Env, WorkingDir, User); `namespace` is the containerd namespace.
pub fn build(req: &ContainerRequest, namespace: &str) -> Result<SpecPlan, SpecError> {
    let c = &req.container;
    let image = &req.image.config;
    let sc = c.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let host_network = req.pod_spec.host_network.unwrap_or(false);

    let args = process_args(c, image);
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
        "cgroupsPath": super::cgroup::path(namespace, &req.id),
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
/// ones).
pub fn prepare_host(steps: &[HostPrep]) -> Result<(), SpecError> {
    let host = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| SpecError::Host { op, path, source }
    };
    for s in steps {
        match s {
            HostPrep::CreateDir(p) => {
                std::fs::create_dir_all(p).map_err(host("create directory", p))?
            }
            HostPrep::CreateFile(p) => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(host("create directory", parent))?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(host("create file", p))?;
            }
            HostPrep::RequireDir { volume, path } => {
                if !path.is_dir() {
                    return Err(invalid(format!(
                        "volume {volume}: hostPath {} is not a directory",
                        path.display()
                    )));
                }
            }
            HostPrep::RequireFile { volume, path } => {
                if !path.is_file() {
                    return Err(invalid(format!(
                        "volume {volume}: hostPath {} is not a file",
                        path.display()
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::SandboxInfo;

    fn req(pod: Value, container: Value) -> ContainerRequest {
        ContainerRequest {
            id: "c1".into(),
            labels: Default::default(),
            pod_spec: serde_json::from_value(pod).unwrap(),
            container: serde_json::from_value(container).unwrap(),
            sandbox: SandboxInfo {
                netns: Some(PathBuf::from("/state/netns/u1")),
                pod_dir: PathBuf::from("/state/pods/u1"),
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
        }
    }

    fn spec(pod: Value, container: Value, image: Value) -> Value {
        let mut r = req(pod, container);
        r.image.config = image;
        build(&r, "ns").unwrap().spec
    }

    fn base() -> Value {
        json!({"containers": []})
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
        let none = build(&req(base(), json!({"name": "c"})), "ns");
        assert!(matches!(none, Err(SpecError::Invalid(m)) if m.starts_with("no command")));
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
        assert_eq!(
            s["process"]["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
        );
        assert_eq!(s["process"]["noNewPrivileges"], true);
        assert_eq!(s["hostname"], "web-abc");
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network"]);
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
                "/run"
            ]
        );
        assert!(s["mounts"][5]["options"]
            .as_array()
            .unwrap()
            .contains(&json!("ro")));
        // no PATH in the image: containerd's default PATH first
        assert_eq!(s["process"]["env"], json!([DEFAULT_PATH, "A=1"]));
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
        assert_eq!(s["process"]["env"], json!(["PATH=/bin", "A=mine", "B="]));
        let from = build(
            &req(
                base(),
                json!({"name": "c", "command": ["x"], "env": [{"name": "SECRET", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}),
            ),
            "ns",
        );
        match from {
            Err(SpecError::Invalid(reason)) => {
                assert!(reason.contains("SECRET") && reason.contains("valueFrom"))
            }
            other => panic!("{other:?}"),
        }
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
        let bad = build(
            &req(
                base(),
                json!({"name": "c", "command": ["x"], "resources": {"limits": {"cpu": "lots"}}}),
            ),
            "ns",
        );
        assert!(
            matches!(bad, Err(SpecError::Quantity { what: "cpu limit", value, .. }) if value == "lots")
        );
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
            {"name": "cm", "configMap": {"name": "x"}}]});
        let mounts = json!([
            {"name": "logs", "mountPath": "/host/logs", "readOnly": true},
            {"name": "made", "mountPath": "/made"},
            {"name": "sock", "mountPath": "/x.sock"},
            {"name": "conf", "mountPath": "/x.conf"},
            {"name": "any", "mountPath": "/opt"},
            {"name": "tmp", "mountPath": "/tmp", "subPath": "a/b"},
            {"name": "tmp", "mountPath": "/dev/shm"}]);
        let plan = build(
            &req(
                pod.clone(),
                json!({"name": "c", "command": ["x"], "volumeMounts": mounts}),
            ),
            "ns",
        )
        .unwrap();
        let vm: Vec<(String, String, String)> = plan.spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "bind")
            .map(|m| {
                (
                    m["destination"].as_str().unwrap().into(),
                    m["source"].as_str().unwrap().into(),
                    m["options"][2].as_str().unwrap().into(),
                )
            })
            .collect();
        let t = |d: &str, s: &str, o: &str| (d.to_string(), s.to_string(), o.to_string());
        assert_eq!(
            vm,
            [
                t("/host/logs", "/var/log", "ro"),
                t("/made", "/srv/made", "rw"),
                t("/x.sock", "/run/x.sock", "rw"),
                t("/x.conf", "/etc/x.conf", "rw"),
                t("/opt", "/opt", "rw"),
                t("/tmp", "/state/pods/u1/volumes/tmp/a/b", "rw"),
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
        assert_eq!(
            plan.host,
            [
                HostPrep::RequireDir {
                    volume: "logs".into(),
                    path: "/var/log".into()
                },
                HostPrep::CreateDir("/srv/made".into()),
                HostPrep::CreateFile("/run/x.sock".into()),
                HostPrep::RequireFile {
                    volume: "conf".into(),
                    path: "/etc/x.conf".into()
                },
                HostPrep::CreateDir("/state/pods/u1/volumes/tmp".into()),
                HostPrep::CreateDir("/state/pods/u1/volumes/tmp/a/b".into()),
                HostPrep::CreateDir("/state/pods/u1/volumes/tmp".into()),
            ]
        );
        for (mount, needle) in [
            (json!({"name": "cm", "mountPath": "/cm"}), "cm"),
            (json!({"name": "nope", "mountPath": "/x"}), "nope"),
            (
                json!({"name": "tmp", "mountPath": "/x", "subPath": "../escape"}),
                "../escape",
            ),
            (json!({"name": "tmp", "mountPath": "relative"}), "relative"),
        ] {
            let r = build(
                &req(
                    pod.clone(),
                    json!({"name": "c", "command": ["x"], "volumeMounts": [mount.clone()]}),
                ),
                "ns",
            );
            match r {
                Err(SpecError::Invalid(reason)) => {
                    assert!(reason.contains(needle), "{reason}")
                }
                other => panic!("{mount}: {other:?}"),
            }
        }
    }

    #[test]
    fn host_prep_checks_and_creates() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("a/b");
        let file = dir.path().join("c/d.sock");
        prepare_host(&[
            HostPrep::CreateDir(made.clone()),
            HostPrep::CreateFile(file.clone()),
        ])
        .unwrap();
        assert!(made.is_dir() && file.is_file());
        prepare_host(&[
            HostPrep::RequireDir {
                volume: "v".into(),
                path: made.clone(),
            },
            HostPrep::RequireFile {
                volume: "f".into(),
                path: file.clone(),
            },
        ])
        .unwrap();
        let missing = dir.path().join("missing");
        for step in [
            HostPrep::RequireDir {
                volume: "v".into(),
                path: missing.clone(),
            },
            HostPrep::RequireFile {
                volume: "v".into(),
                path: made.clone(),
            },
        ] {
            match prepare_host(&[step]) {
                Err(SpecError::Invalid(reason)) => assert!(reason.contains("volume v"), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
