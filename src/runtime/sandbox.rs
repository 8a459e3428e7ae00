//! Pod sandboxes without a pause container: a pod directory and, unless hostNetwork, a persistent
//! network namespace bind-mounted on a file (as `ip netns add` does), which every container of the
//! pod joins through its spec. The loopback interface inside is brought up.
use std::path::{Path, PathBuf};

use super::{PodSandbox, Result, RuntimeError, SandboxInfo};

const NSFS_MAGIC: i64 = 0x6e73_6673;

fn err(pod: &str, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Sandbox {
        pod: pod.to_string(),
        reason: reason.into(),
    }
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
        Err(err(uid, "pod uid is not a safe path component"))
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
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a properly sized out buffer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == NSFS_MAGIC
}

/// Creates the sandbox's directories and network namespace. Idempotent.
pub fn create(state_dir: &Path, pod: &PodSandbox) -> Result<SandboxInfo> {
    check_uid(&pod.uid)?;
    let dir = pod_dir(state_dir, &pod.uid);
    std::fs::create_dir_all(&dir)
        .map_err(|e| err(&pod.uid, format!("create {}: {e}", dir.display())))?;
    if pod.host_network {
        return Ok(SandboxInfo {
            netns: None,
            pod_dir: dir,
        });
    }
    let ns = netns_path(state_dir, &pod.uid);
    if !is_netns_mount(&ns) {
        if let Some(parent) = ns.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| err(&pod.uid, format!("create {}: {e}", parent.display())))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&ns)
            .map_err(|e| err(&pod.uid, format!("create {}: {e}", ns.display())))?;
        let target = ns.clone();
        // unshare() moves the calling thread: do it on a thread of its own that then exits, so
        // no thread of the runtime ever lives in the pod's namespace.
        let res = std::thread::spawn(move || new_netns_at(&target))
            .join()
            .map_err(|_| err(&pod.uid, "netns thread panicked"))?;
        if let Err(e) = res {
            let _ = std::fs::remove_file(&ns);
            return Err(err(
                &pod.uid,
                format!("network namespace {}: {e}", ns.display()),
            ));
        }
    }
    log::debug!(pod = pod.uid.as_str(); "sandbox ready");
    Ok(SandboxInfo {
        netns: Some(ns),
        pod_dir: dir,
    })
}

fn new_netns_at(target: &Path) -> std::result::Result<(), String> {
    // SAFETY: plain syscalls on this thread with valid arguments.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
        }
        let tid = libc::gettid();
        let src = std::ffi::CString::new(format!("/proc/self/task/{tid}/ns/net"))
            .map_err(|e| e.to_string())?;
        let dst = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|e| e.to_string())?;
        if libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) != 0
        {
            return Err(format!("bind mount: {}", std::io::Error::last_os_error()));
        }
        loopback_up()
    }
}

/// `ip link set lo up` in the calling thread's network namespace (SIOCSIFFLAGS).
unsafe fn loopback_up() -> std::result::Result<(), String> {
    let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let mut ifr: libc::ifreq = std::mem::zeroed();
    for (i, b) in b"lo\0".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr);
    if rc == 0 {
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        rc = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr);
    }
    let e = std::io::Error::last_os_error();
    libc::close(fd);
    if rc != 0 {
        return Err(format!("bring up lo: {e}"));
    }
    Ok(())
}

/// Unmounts and deletes the sandbox's network namespace and pod directory. Ok if already gone.
pub fn remove(state_dir: &Path, uid: &str) -> Result<()> {
    check_uid(uid)?;
    let ns = netns_path(state_dir, uid);
    if is_netns_mount(&ns) {
        let c = std::ffi::CString::new(ns.as_os_str().as_encoded_bytes())
            .map_err(|e| err(uid, e.to_string()))?;
        // SAFETY: valid path; MNT_DETACH so a container still inside does not block removal.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(err(
                uid,
                format!(
                    "unmount {}: {}",
                    ns.display(),
                    std::io::Error::last_os_error()
                ),
            ));
        }
    }
    match std::fs::remove_file(&ns) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(uid, format!("remove {}: {e}", ns.display()))),
    }
    let dir = pod_dir(state_dir, uid);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(uid, format!("remove {}: {e}", dir.display()))),
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
