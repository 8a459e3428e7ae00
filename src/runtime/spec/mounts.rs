//! Volumes and mounts: hostPath checks and propagation, volume sources, volumeMounts with subPath,
//! the pod's files and the default mounts.
use super::*;

/// A relative path that stays inside its base (no `..`, not absolute).
pub(super) fn safe_sub_path(sub: &str) -> bool {
    Path::new(sub)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// The mount (of /proc/self/mountinfo) that `path` lives on, and its optional fields
/// (`shared:N`, `master:N`): the longest mount point that is a prefix of it.
pub(super) fn mount_of<'a>(mountinfo: &'a str, path: &Path) -> Option<(&'a str, Vec<&'a str>)> {
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
pub(super) fn check_propagation(
    mountinfo: &str,
    source: &Path,
    shared_only: bool,
) -> Result<(), SpecError> {
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
pub(super) fn host_path_source(
    vol: &Volume,
    host: &mut Vec<HostPrep>,
) -> Result<(PathBuf, bool), SpecError> {
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
pub(super) fn fs_group(pod: &PodSpec) -> Option<u32> {
    pod.security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok())
}

/// The source of `vol` on the host, whether it is a file, and whether it is always read-only
/// (downwardAPI), with the host steps that make it.
pub(super) fn volume_source(
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
pub(super) fn volume_mounts(
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
pub(super) fn sub_path(
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
pub(super) fn default_mounts(privileged: bool) -> Vec<Value> {
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
pub(super) fn parts(dest: &str) -> usize {
    Path::new(dest).components().count()
}
