//! Pod sandboxes without a pause container: a pod directory and, unless hostNetwork, a persistent
//! network namespace bind-mounted on a file (as `ip netns add` does), which every container of the
//! pod joins through its spec. The loopback interface inside is brought up.
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
    #[error("the thread making network namespace {} panicked", .0.display())]
    Thread(PathBuf),
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

/// Whether `path` is a mounted network namespace (nsfs).
pub fn is_netns_mount(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// The sandbox of an existing pod, if it is there: the pod directory and (unless hostNetwork)
/// a mounted network namespace. Creates nothing.
pub fn existing(state_dir: &Path, pod: &PodSandbox) -> Result<Option<SandboxInfo>> {
    check_uid(&pod.uid)?;
    let dir = pod_dir(state_dir, &pod.uid);
    let netns = if pod.host_network {
        None
    } else {
        let ns = netns_path(state_dir, &pod.uid);
        if !is_netns_mount(&ns) {
            return Ok(None);
        }
        Some(ns)
    };
    Ok(dir.is_dir().then_some(SandboxInfo {
        netns,
        pod_dir: dir,
    }))
}

/// Creates the sandbox's directories and network namespace. Idempotent.
pub fn create(state_dir: &Path, pod: &PodSandbox) -> Result<SandboxInfo> {
    check_uid(&pod.uid)?;
    let dir = pod_dir(state_dir, &pod.uid);
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    if pod.host_network {
        return Ok(SandboxInfo {
            netns: None,
            pod_dir: dir,
        });
    }
    let ns = netns_path(state_dir, &pod.uid);
    if !is_netns_mount(&ns) {
        if let Some(parent) = ns.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&ns)
            .map_err(io("create", &ns))?;
        let target = ns.clone();
        // unshare() moves the calling thread: do it on a thread of its own that then exits, so
        // no thread of the runtime ever lives in the pod's namespace.
        let res = std::thread::spawn(move || new_netns_at(&target))
            .join()
            .map_err(|_| SandboxError::Thread(ns.clone()))?;
        if let Err(e) = res {
            let _ = std::fs::remove_file(&ns);
            return Err(e);
        }
    }
    tracing::debug!(pod_uid = pod.uid.as_str(), "sandbox ready");
    Ok(SandboxInfo {
        netns: Some(ns),
        pod_dir: dir,
    })
}

/// A new network namespace for the calling thread, bind-mounted on `target`, its loopback up.
fn new_netns_at(target: &Path) -> Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(sys("unshare", target))?;
    let own = PathBuf::from(format!("/proc/self/task/{}/ns/net", nix::unistd::gettid()));
    nix::mount::mount(
        Some(&own),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys("bind mount", target))?;
    loopback_up().map_err(sys("bring up lo", target))
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

/// Unmounts and deletes the sandbox's network namespace and pod directory. Ok if already gone.
pub fn remove(state_dir: &Path, uid: &str) -> Result<()> {
    check_uid(uid)?;
    let ns = netns_path(state_dir, uid);
    if is_netns_mount(&ns) {
        // MNT_DETACH: a container still inside does not block the removal
        nix::mount::umount2(&ns, MntFlags::MNT_DETACH).map_err(sys("unmount", &ns))?;
    }
    match std::fs::remove_file(&ns) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove", &ns)(e)),
    }
    let dir = pod_dir(state_dir, uid);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", &dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
