//! Pod sandboxes without a pause container: a pod directory, a record of the sandbox, and,
//! unless hostNetwork / hostIPC, a persistent network namespace and IPC namespace, each
//! bind-mounted on a file (as `ip netns add` does), which every container of the pod joins
//! through its spec. The loopback interface inside is brought up; the pod's other interfaces are
//! its network plugin's (`cni`).
//!
//! The record (`STATE_DIR/sandboxes/UID.json`, written before anything else and removed last)
//! is what makes a sandbox findable when no container of its pod exists: an agent stopped
//! between making the sandbox and starting a container finds it again and removes it.
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::{PodSandbox, SandboxInfo};

/// What failed while making or removing a sandbox, with the system's answer as the cause.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("pod uid {0:?} is not a safe path component")]
    Uid(String),
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} for {}", path.display())]
    Sys {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the thread making the namespaces of {} panicked", .0.display())]
    Thread(PathBuf),
    #[error("sandbox record {}", path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

type Result<T> = std::result::Result<T, SandboxError>;

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.to_path_buf();
    move |source| SandboxError::Io { op, path, source }
}

fn sys(op: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> SandboxError {
    let path = path.to_path_buf();
    move |source| SandboxError::Sys { op, path, source }
}

/// A pod uid that is safe as one path component.
fn check_uid(uid: &str) -> Result<()> {
    let ok = !uid.is_empty()
        && uid != "."
        && uid != ".."
        && uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(SandboxError::Uid(uid.to_string()))
    }
}

pub fn pod_dir(state_dir: &Path, uid: &str) -> PathBuf {
    state_dir.join("pods").join(uid)
}

pub fn netns_path(state_dir: &Path, uid: &str) -> PathBuf {
    state_dir.join("netns").join(uid)
}

pub fn ipcns_path(state_dir: &Path, uid: &str) -> PathBuf {
    state_dir.join("ipcns").join(uid)
}

fn record_path(state_dir: &Path, uid: &str) -> PathBuf {
    state_dir.join("sandboxes").join(format!("{uid}.json"))
}

/// Whether `path` is a mounted namespace (nsfs).
pub fn is_ns_mount(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Whether `path` is a mounted network namespace (nsfs).
pub fn is_netns_mount(path: &Path) -> bool {
    is_ns_mount(path)
}

/// Writes the sandbox's record (before anything else of it is made).
pub fn write_record(state_dir: &Path, pod: &PodSandbox) -> Result<()> {
    check_uid(&pod.uid)?;
    let path = record_path(state_dir, &pod.uid);
    let text = serde_json::to_vec_pretty(pod).map_err(|source| SandboxError::Record {
        path: path.clone(),
        source,
    })?;
    if std::fs::read(&path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, &text).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("rename", &path))
}

/// The sandbox recorded for `uid`, if any.
pub fn record(state_dir: &Path, uid: &str) -> Result<Option<PodSandbox>> {
    check_uid(uid)?;
    let path = record_path(state_dir, uid);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", &path)(e)),
    };
    let r: PodSandbox = serde_json::from_slice(&text).map_err(|source| SandboxError::Record {
        path: path.clone(),
        source,
    })?;
    Ok(Some(r))
}

/// Every recorded sandbox (unreadable records are skipped: their uid is their file name, and
/// `remove` can still remove them by it).
pub fn records(state_dir: &Path) -> Vec<PodSandbox> {
    let dir = state_dir.join("sandboxes");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(uid) = name.strip_suffix(".json") else {
            continue;
        };
        match record(state_dir, uid) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(pod_uid = uid, error = %super::chain(&e), "unreadable sandbox record")
            }
        }
    }
    out
}

/// Removes the record, the last step of removing a sandbox. Ok if already gone.
pub fn remove_record(state_dir: &Path, uid: &str) -> Result<()> {
    check_uid(uid)?;
    let path = record_path(state_dir, uid);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", &path)(e)),
    }
}

/// The sandbox of an existing pod, if it is there: the pod directory and (unless hostNetwork /
/// hostIPC) its mounted namespaces. Creates nothing; its IPs are the network plugin's to say.
pub fn existing(state_dir: &Path, pod: &PodSandbox) -> Result<Option<SandboxInfo>> {
    check_uid(&pod.uid)?;
    let dir = pod_dir(state_dir, &pod.uid);
    let mounted = |wanted: bool, path: PathBuf| -> Option<Option<PathBuf>> {
        if !wanted {
            return Some(None);
        }
        is_ns_mount(&path).then_some(Some(path))
    };
    let Some(netns) = mounted(!pod.host_network, netns_path(state_dir, &pod.uid)) else {
        return Ok(None);
    };
    let Some(ipc_ns) = mounted(!pod.host_ipc, ipcns_path(state_dir, &pod.uid)) else {
        return Ok(None);
    };
    Ok(dir.is_dir().then_some(SandboxInfo {
        netns,
        ipc_ns,
        pod_dir: dir,
        ips: Vec::new(),
    }))
}

/// Creates the sandbox's record, directories and namespaces (those missing). Idempotent.
pub fn create(state_dir: &Path, pod: &PodSandbox) -> Result<SandboxInfo> {
    check_uid(&pod.uid)?;
    write_record(state_dir, pod)?;
    let dir = pod_dir(state_dir, &pod.uid);
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let mut wanted = Vec::new();
    if !pod.host_network {
        wanted.push((CloneFlags::CLONE_NEWNET, netns_path(state_dir, &pod.uid)));
    }
    if !pod.host_ipc {
        wanted.push((CloneFlags::CLONE_NEWIPC, ipcns_path(state_dir, &pod.uid)));
    }
    let missing: Vec<(CloneFlags, PathBuf)> = wanted
        .iter()
        .filter(|(_, p)| !is_ns_mount(p))
        .cloned()
        .collect();
    if !missing.is_empty() {
        for (_, p) in &missing {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(p)
                .map_err(io("create", p))?;
        }
        let targets = missing.clone();
        let first = missing[0].1.clone();
        // unshare() moves the calling thread: do it on a thread of its own that then exits, so
        // no thread of the runtime ever lives in the pod's namespaces.
        let res = std::thread::spawn(move || new_namespaces_at(&targets))
            .join()
            .map_err(|_| SandboxError::Thread(first))?;
        if let Err(e) = res {
            for (_, p) in &missing {
                if is_ns_mount(p) {
                    let _ = nix::mount::umount2(p, MntFlags::MNT_DETACH);
                }
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    }
    tracing::debug!(pod_uid = pod.uid.as_str(), "sandbox ready");
    let path_of = |flag| {
        wanted
            .iter()
            .find(|(f, _)| *f == flag)
            .map(|(_, p)| p.clone())
    };
    Ok(SandboxInfo {
        netns: path_of(CloneFlags::CLONE_NEWNET),
        ipc_ns: path_of(CloneFlags::CLONE_NEWIPC),
        pod_dir: dir,
        ips: Vec::new(),
    })
}

/// New namespaces for the calling thread, each bind-mounted on its target; in a new network
/// namespace the loopback is brought up.
fn new_namespaces_at(targets: &[(CloneFlags, PathBuf)]) -> Result<()> {
    let mut flags = CloneFlags::empty();
    for (f, _) in targets {
        flags |= *f;
    }
    let first = &targets[0].1;
    nix::sched::unshare(flags).map_err(sys("unshare", first))?;
    for (f, target) in targets {
        let kind = if *f == CloneFlags::CLONE_NEWNET {
            "net"
        } else {
            "ipc"
        };
        let own = PathBuf::from(format!(
            "/proc/self/task/{}/ns/{kind}",
            nix::unistd::gettid()
        ));
        nix::mount::mount(
            Some(&own),
            target.as_path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("bind mount", target))?;
        if *f == CloneFlags::CLONE_NEWNET {
            loopback_up().map_err(sys("bring up lo", target))?;
        }
    }
    Ok(())
}

/// `ip link set lo up` in the calling thread's network namespace (SIOCSIFFLAGS).
fn loopback_up() -> nix::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut ifr = libc::ifreq {
        ifr_name: [0; libc::IFNAMSIZ],
        ifr_ifru: libc::__c_anonymous_ifr_ifru { ifru_flags: 0 },
    };
    for (slot, b) in ifr.ifr_name.iter_mut().zip(b"lo") {
        *slot = *b as libc::c_char;
    }
    // SAFETY: `sock` is an open socket for both calls and `ifr` a valid, NUL-terminated ifreq:
    // SIOCGIFFLAGS fills its flags (the union member then read), SIOCSIFFLAGS only reads it.
    // nix has no wrapper for interface flags.
    let rc = unsafe {
        let rc = libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr);
        if rc == 0 {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &ifr)
        } else {
            rc
        }
    };
    nix::errno::Errno::result(rc).map(drop)
}

/// The mount points under `dir` (of /proc/self/mountinfo), deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", path)(e)),
    }
}

/// Unmounts and deletes the sandbox's namespaces, the mounts in its pod directory (emptyDirs of
/// medium Memory) and the directory. Ok if already gone. The record stays: `remove_record`.
pub fn remove(state_dir: &Path, uid: &str) -> Result<()> {
    check_uid(uid)?;
    for ns in [netns_path(state_dir, uid), ipcns_path(state_dir, uid)] {
        if is_ns_mount(&ns) {
            // MNT_DETACH: a container still inside does not block the removal
            nix::mount::umount2(&ns, MntFlags::MNT_DETACH).map_err(sys("unmount", &ns))?;
        }
        remove_file(&ns)?;
    }
    let dir = pod_dir(state_dir, uid);
    for m in mounts_under(&dir) {
        nix::mount::umount2(&m, MntFlags::MNT_DETACH).map_err(sys("unmount", &m))?;
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", &dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::PortMapping;
    use std::collections::BTreeMap;

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodSandbox {
            uid: "u-1".into(),
            namespace: "default".into(),
            name: "web".into(),
            host_network: true,
            host_ipc: false,
            labels: BTreeMap::from([("a".into(), "b".into())]),
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
        };
        write_record(dir.path(), &pod).unwrap();
        assert_eq!(record(dir.path(), "u-1").unwrap(), Some(pod.clone()));
        assert_eq!(records(dir.path()), [pod]);
        remove_record(dir.path(), "u-1").unwrap();
        remove_record(dir.path(), "u-1").unwrap();
        assert!(records(dir.path()).is_empty());
    }

    #[test]
    fn uids() {
        for (uid, ok) in [
            ("0b6e7c1a-1111-2222-3333-444455556666", true),
            ("abc", true),
            ("", false),
            ("..", false),
            ("a/b", false),
            ("../x", false),
        ] {
            assert_eq!(check_uid(uid).is_ok(), ok, "{uid}");
        }
    }
}
