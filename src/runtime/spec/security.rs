//! The security side of a container's spec: containerd's default capabilities, masked and
//! read-only paths, the user, runAsNonRoot, capabilities, seccomp and sysctls.
use super::*;

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

/// uid, gid: securityContext (container over pod) else the image's numeric User, else 0.
pub(super) fn user(pod: &PodSpec, c: &Container, image: &Value) -> (i64, i64) {
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
pub(super) fn check_run_as_non_root(
    req: &ContainerRequest,
    image: &Value,
) -> Result<(), SpecError> {
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

pub(super) fn capability(name: &str) -> String {
    let up = name.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

pub(super) fn capabilities(c: &Container, privileged: bool) -> Vec<String> {
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
pub(super) fn seccomp_profile(
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
pub(super) fn sysctls(
    pod: &PodSpec,
    host: &HostFacts,
) -> Result<BTreeMap<String, String>, SpecError> {
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
