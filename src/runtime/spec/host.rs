//! The host side effects `build` asks for (`HostPrep`), performed: the one part of the spec that
//! touches the host.
use super::*;

/// What is at `path` (following symlinks), as the kubelet's GetFileType names it.
pub(super) fn file_type(path: &Path) -> std::io::Result<Option<PathType>> {
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
pub(super) fn is_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// fsGroup ownership of `dir` and everything in it (the kubelet's SetVolumeOwnership).
pub(super) fn own(dir: &Path, gid: u32) -> std::io::Result<()> {
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
