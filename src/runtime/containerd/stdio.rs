//! The standard streams of a container with `stdin` or `tty` (see ARCHITECTURE.md, "attach"):
//! FIFOs in its directory `STATE/containers/ID`, as containerd's CRI plugin makes them.
//!
//! - `stdin`: the shim reads it into the process (or its console) and holds a write end itself
//!   (pkg/process/init.go openStdin) until `CloseIO`, so attaches come and go, and the agent
//!   too, without the process seeing the end of its input.
//! - `tty`: the shim copies its console into the stdout URI, the log driver's `binary://` one
//!   included (1.6's CopyConsole): nothing more is needed for output.
//! - `stdin` without `tty` under the log driver: the 1.6 shim copies no stdin with `binary://`
//!   IO, so stdout and stderr are FIFOs too and the agent starts the log driver itself on their
//!   read ends (in its own session: it outlives the agent, which systemd stops with
//!   KillMode=process). The shim also keeps a read end of each, so while no driver runs the
//!   output waits in the pipe (64 KiB, then the process's writes wait), as with CRI while
//!   containerd restarts; the agent starting again starts a driver for every running one that
//!   has none. The driver holds an exclusive flock on its stdout FIFO's open file: that is how
//!   one is told to be alive.
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use containerd_client::services::v1::ListTasksRequest;
use containerd_client::types::v1::Status as ProcStatus;

use super::{Ctd, Result, RuntimeError, StdioSpec};

/// The marker of a container whose stdin is closed when its first attach ends.
const STDIN_ONCE: &str = "stdin-once";
/// The log URI of a container whose log driver the agent starts.
const DRIVER_URI: &str = "driver-uri";

/// The directory of container `id`'s FIFOs (and its termination-log file).
pub(super) fn dir(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("containers").join(id)
}

/// The stdin FIFO of container `id`.
pub(super) fn stdin_path(state_dir: &Path, id: &str) -> PathBuf {
    dir(state_dir, id).join("stdin")
}

/// Whether container `id` was made with `stdinOnce`.
pub(super) fn stdin_once(state_dir: &Path, id: &str) -> bool {
    dir(state_dir, id).join(STDIN_ONCE).exists()
}

/// What Tasks.Create gets for a container with a stdin or a terminal.
#[derive(Debug, Default)]
pub(super) struct Streams {
    /// The stdin FIFO's path, empty without stdin.
    pub stdin: String,
    /// stdout/stderr FIFOs replacing the log URI, when the agent runs the driver.
    pub outputs: Option<(String, String)>,
    /// The read ends the driver gets (flocked): started once the task is created.
    pub driver: Option<(OwnedFd, OwnedFd)>,
}

fn mkfifo(path: &Path) -> Result<()> {
    match nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(RuntimeError::io("create container FIFO", path)(e.into())),
    }
}

/// An output FIFO's read end: never waits for the writer, and under an exclusive flock (Err
/// WouldBlock when a driver holds it).
fn open_locked(path: &Path) -> std::io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    // SAFETY: flock on a descriptor this function owns
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f.into())
}

/// Makes the FIFOs of container `id` (`driver_uri`: the log driver's URI when the node uses
/// it).
pub(super) fn prepare(
    state_dir: &Path,
    id: &str,
    spec: StdioSpec,
    driver_uri: Option<&str>,
) -> Result<Streams> {
    let mut s = Streams::default();
    if !spec.stdin {
        return Ok(s);
    }
    let dir = dir(state_dir, id);
    std::fs::create_dir_all(&dir).map_err(RuntimeError::io("create container directory", &dir))?;
    let path = dir.join("stdin");
    mkfifo(&path)?;
    s.stdin = path.to_string_lossy().into_owned();
    if spec.stdin_once {
        let marker = dir.join(STDIN_ONCE);
        File::create(&marker).map_err(RuntimeError::io("mark stdinOnce", &marker))?;
    }
    if let (false, Some(uri)) = (spec.terminal, driver_uri) {
        let (out, err) = (dir.join("stdout"), dir.join("stderr"));
        mkfifo(&out)?;
        mkfifo(&err)?;
        let file = dir.join(DRIVER_URI);
        std::fs::write(&file, uri).map_err(RuntimeError::io("write driver URI", &file))?;
        s.driver = Some((
            open_locked(&out).map_err(RuntimeError::io("open stdout FIFO", &out))?,
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&err)
                .map_err(RuntimeError::io("open stderr FIFO", &err))?
                .into(),
        ));
        s.outputs = Some((
            out.to_string_lossy().into_owned(),
            err.to_string_lossy().into_owned(),
        ));
    }
    Ok(s)
}

/// Starts the log driver of container `id` (namespace `ns`) on the read ends `fds`, in its own
/// session: it ends when the process's output does.
pub(super) fn start_driver(
    state_dir: &Path,
    id: &str,
    ns: &str,
    (stdout, stderr): (OwnedFd, OwnedFd),
) -> Result<()> {
    let file = dir(state_dir, id).join(DRIVER_URI);
    let uri = std::fs::read_to_string(&file).map_err(RuntimeError::io("read driver URI", &file))?;
    let binary = uri
        .strip_prefix("binary://")
        .and_then(|r| r.split('?').next())
        .map(|b| {
            percent_encoding::percent_decode_str(b)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let ready = File::open("/dev/null")
        .map_err(RuntimeError::io("open /dev/null", Path::new("/dev/null")))?;
    let fds = [stdout.as_raw_fd(), stderr.as_raw_fd(), ready.as_raw_fd()];
    let mut cmd = std::process::Command::new(&binary);
    cmd.args(crate::logdriver::args_from_uri(&uri))
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", ns)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, fcntl, dup2).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            libc::setsid();
            // above 5 first, so that no dup2 overwrites a source still to be moved
            let mut high = [0; 3];
            for (h, fd) in high.iter_mut().zip(fds) {
                *h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if *h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (target, h) in (3..).zip(high) {
                if libc::dup2(h, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(RuntimeError::io("start log driver", Path::new(&binary)))?;
    // reaped when it ends; it outlives the agent, which is then not its parent
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// After an agent restart: a driver for every running container whose FIFOs the agent reads
/// and that has none (its flock is free).
pub(super) async fn adopt(ctd: &Ctd, state_dir: &Path, ns: &str) {
    let Ok(dirs) = std::fs::read_dir(state_dir.join("containers")) else {
        return;
    };
    let ours: Vec<String> = dirs
        .flatten()
        .filter(|d| d.path().join(DRIVER_URI).exists())
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    if ours.is_empty() {
        return;
    }
    let tasks = match ctd
        .tasks()
        .list(ctd.req(ListTasksRequest {
            filter: String::new(),
        }))
        .await
    {
        Ok(t) => t.into_inner().tasks,
        Err(s) => {
            tracing::warn!(error = s.message(), "list tasks for their log drivers");
            return;
        }
    };
    // the container's id is `id` in 1.6 (container_id empty)
    let running = tasks
        .iter()
        .filter(|t| t.status == ProcStatus::Running as i32);
    for t in running {
        let id = if t.container_id.is_empty() {
            &t.id
        } else {
            &t.container_id
        };
        if ours.contains(id) {
            restart_driver(state_dir, id, ns);
        }
    }
}

fn restart_driver(state_dir: &Path, id: &str, ns: &str) {
    let dir = dir(state_dir, id);
    let out = match open_locked(&dir.join("stdout")) {
        Ok(fd) => fd,
        // EWOULDBLOCK: its driver is alive
        Err(_) => return,
    };
    let err = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(dir.join("stderr"))
    {
        Ok(f) => f.into(),
        Err(_) => return,
    };
    match start_driver(state_dir, id, ns, (out, err)) {
        Ok(()) => tracing::info!(container_id = id, "log driver started again"),
        Err(e) => {
            tracing::warn!(container_id = id, error = %crate::runtime::chain(&e), "start log driver")
        }
    }
}
