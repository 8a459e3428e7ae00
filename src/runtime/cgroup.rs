//! The containers' cgroups. runc (cgroupfs driver) makes `/daemonset-agent/NAMESPACE/ID` under
//! every cgroup v1 hierarchy (or once in the v2 unified one), creating the parents on the way,
//! and removes only the container's own cgroup when its task is deleted. The parents are ours to
//! remove: the namespace's goes with its last container. `/daemonset-agent` itself stays, as the
//! kubelet's `/kubepods` does: every agent namespace on the machine shares it.
use std::path::PathBuf;

/// The cgroup all of the agent's containers live under.
pub const ROOT: &str = "daemonset-agent";

/// The `linux.cgroupsPath` of container `id` in containerd namespace `namespace`.
pub fn path(namespace: &str, id: &str) -> String {
    format!("/{ROOT}/{namespace}/{id}")
}

/// The mount points of the cgroup hierarchies (`cgroup` and `cgroup2` in /proc/self/mountinfo).
fn hierarchies() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    hierarchies_in(&info)
}

fn hierarchies_in(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            let (mount, fs) = line.split_once(" - ")?;
            let fstype = fs.split(' ').next()?;
            let point = mount.split(' ').nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// Removes what is left of container `id`'s cgroups (runc removes them itself when it deletes
/// the task; not when its shim was killed) and then the namespace's parent, if no container of
/// the namespace has a cgroup in it any more. rmdir removes only an empty cgroup (one with
/// neither processes nor children), so nothing in use is touched. Blocking: a few rmdir calls.
pub fn remove(namespace: &str, id: &str) {
    let own = path(namespace, id);
    for h in hierarchies() {
        let own = h.join(own.trim_start_matches('/'));
        let Some(parent) = own.parent() else { continue };
        for dir in [own.as_path(), parent] {
            match std::fs::remove_dir(dir) {
                Ok(()) => tracing::debug!(cgroup = %dir.display(), "removed cgroup"),
                // gone already; or still holding processes or other containers' cgroups
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) => {}
                Err(e) => {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "remove cgroup")
                }
            }
        }
    }
}

/// What a container's cgroup has used so far (None: not found).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time, nanoseconds (cumulative).
    pub cpu_ns: Option<u64>,
    /// Memory in use, page cache included.
    pub memory_bytes: Option<u64>,
    /// The kubelet's working set: memory in use minus the inactive file cache.
    pub working_set_bytes: Option<u64>,
}

/// The usage of container `id` of containerd namespace `namespace`, from cgroup v1's cpuacct
/// and memory controllers, else v2's files. Blocking: reads a few small files.
pub fn usage(namespace: &str, id: &str) -> Usage {
    let own = path(namespace, id);
    let dirs: Vec<PathBuf> = hierarchies()
        .into_iter()
        .map(|h| h.join(own.trim_start_matches('/')))
        .collect();
    let read = |file: &str| {
        dirs.iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
    };
    let number = |file: &str| read(file).and_then(|t| t.trim().parse::<u64>().ok());
    let stat = |file: &str, key: &str| read(file).and_then(|t| stat_value(&t, key));
    let cpu_ns = number("cpuacct.usage")
        .or_else(|| stat("cpu.stat", "usage_usec").map(|us| us.saturating_mul(1000)));
    let (memory_bytes, inactive) = match number("memory.usage_in_bytes") {
        Some(m) => (Some(m), stat("memory.stat", "total_inactive_file")),
        None => (
            number("memory.current"),
            stat("memory.stat", "inactive_file"),
        ),
    };
    Usage {
        cpu_ns,
        memory_bytes,
        working_set_bytes: memory_bytes.map(|m| m.saturating_sub(inactive.unwrap_or(0))),
    }
}

/// The value of `key` in a `KEY VALUE` per line file (`memory.stat`, `cpu.stat`).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_hierarchies_from_mountinfo() {
        let info = "\
25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
33 31 0:28 / /sys/fs/cgroup/unified rw,nosuid shared:11 - cgroup2 cgroup2 rw
34 31 0:29 / /sys/fs/cgroup/systemd rw,nosuid shared:12 - cgroup cgroup rw,xattr,name=systemd
38 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:17 - cgroup cgroup rw,cpu,cpuacct
";
        assert_eq!(
            hierarchies_in(info),
            [
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/cpu,cpuacct"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(path("ns-a", "c_1"), "/daemonset-agent/ns-a/c_1");
    }

    #[test]
    fn stat_files_are_read_by_key() {
        let stat = "cache 10\ntotal_inactive_file 4096\ninactive_file 7\n";
        assert_eq!(stat_value(stat, "total_inactive_file"), Some(4096));
        assert_eq!(stat_value(stat, "inactive_file"), Some(7));
        assert_eq!(stat_value(stat, "missing"), None);
        assert_eq!(usage("no-such-namespace", "no-such-id"), Usage::default());
    }
}
