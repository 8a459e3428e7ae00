//! Streamed execs (`kubectl exec`, through the node API): a process started with containerd's
//! Tasks.Exec whose standard streams are FIFOs, as containerd's `cio` makes them: the shim copies
//! the process's output into them and our stdin out of them; under a terminal the shim's console
//! is the process's stdin and stdout, and `ResizePty` sizes it.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, KillRequest, ResizePtyRequest,
    StartRequest, WaitRequest,
};
use containerd_client::tonic::Code;
use tokio::net::unix::pipe;

use super::client::{ctd_err, Ctd};
use super::containerd::PROCESS_TYPE_URL;
use super::{ExecControl, ExecRequest, ExecSession, Result, RuntimeError};

/// The prefix of a streamed exec's id and of its FIFOs' directory under `STATE/exec`.
pub const EXEC_PREFIX: &str = "exec-";
/// How long a killed process may take to be reaped before it is deleted anyway.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long the shim may take to open a started process's stdin.
const STDIN_OPEN: Duration = Duration::from_secs(10);

/// Makes the FIFO `name` in `dir`.
fn fifo(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| RuntimeError::io("create exec FIFO", &path)(std::io::Error::from(e)))?;
    Ok(path)
}

/// Opens an output FIFO read-write: opening never waits for the shim, and what it writes stays
/// in the pipe until read (it never ends: the process's deletion tells it is all there).
fn open_receiver(path: &Path) -> Result<pipe::Receiver> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .map_err(RuntimeError::io("open exec FIFO", path))
}

/// Starts `process` (a process spec) as exec `exec_id` of container `id` with FIFOs under
/// `state_dir/exec/exec_id` for the streams `req` asks for.
pub(super) async fn start(
    ctd: &Ctd,
    state_dir: &Path,
    id: &str,
    process: Vec<u8>,
    req: &ExecRequest,
) -> Result<ExecSession> {
    let exec_id = format!("{EXEC_PREFIX}{:016x}", rand::random::<u64>());
    let dir = state_dir.join("exec").join(&exec_id);
    std::fs::create_dir_all(&dir).map_err(RuntimeError::io("create exec directory", &dir))?;
    let control = ContainerdExec {
        ctd: ctd.clone(),
        id: id.to_string(),
        exec_id: exec_id.clone(),
        dir: dir.clone(),
        deleted: AtomicBool::new(false),
    };
    // from here on, the control removes what was made (when dropped on an error too)
    let stdin = match req.stdin {
        true => Some(fifo(&dir, "stdin")?),
        false => None,
    };
    let stdout = match req.stdout || req.tty {
        true => Some(fifo(&dir, "stdout")?),
        false => None,
    };
    let stderr = match req.stderr && !req.tty {
        true => Some(fifo(&dir, "stderr")?),
        false => None,
    };
    let path_of = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default()
    };
    let session_stdout = stdout.as_deref().map(open_receiver).transpose()?;
    let session_stderr = stderr.as_deref().map(open_receiver).transpose()?;
    ctd.tasks()
        .exec(ctd.req(ExecProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.clone(),
            stdin: path_of(&stdin),
            stdout: path_of(&stdout),
            stderr: path_of(&stderr),
            terminal: req.tty,
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE_URL.to_string(),
                value: process,
            }),
        }))
        .await
        .map_err(|s| ctd_err("exec", id, s))?;
    let started = ctd
        .tasks()
        .start(ctd.req(StartRequest {
            container_id: id.to_string(),
            exec_id: exec_id.clone(),
        }))
        .await;
    if let Err(s) = started {
        control.delete_once().await;
        return Err(ctd_err("start exec", id, s));
    }
    let session_stdin = match stdin {
        Some(p) => match open_stdin(p).await {
            Ok(s) => Some(s),
            Err(e) => {
                control.end().await;
                return Err(e);
            }
        },
        None => None,
    };
    Ok(ExecSession {
        stdin: session_stdin,
        stdout: session_stdout,
        stderr: session_stderr,
        control: Box::new(control),
    })
}

/// Opens the stdin FIFO for writing once the shim opened it for reading (it does while it
/// starts the process): only then does closing it reach the process as the end of its input
/// (closed before, what was written would go with the pipe, and the shim would wait for a
/// writer for ever).
async fn open_stdin(path: PathBuf) -> Result<pipe::Sender> {
    let at = path.clone();
    let opening =
        tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(at));
    match tokio::time::timeout(STDIN_OPEN, opening).await {
        Ok(Ok(Ok(f))) => {
            pipe::Sender::from_file(f).map_err(RuntimeError::io("open exec FIFO", &path))
        }
        Ok(Ok(Err(e))) => Err(RuntimeError::io("open exec FIFO", &path)(e)),
        Ok(Err(_)) | Err(_) => {
            // a reader of our own lets the waiting open return (and the thread end)
            let _ = pipe::OpenOptions::new().open_receiver(&path);
            Err(RuntimeError::Incomplete {
                op: "open exec stdin",
                id: path.display().to_string(),
                what: "the shim did not open it",
            })
        }
    }
}

/// Kills exec `exec_id` of container `id` (SIGKILL); an error is only logged: the process may
/// have ended already.
pub(super) async fn kill(ctd: &Ctd, id: &str, exec_id: &str) {
    let killed = ctd
        .tasks()
        .kill(ctd.req(KillRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            signal: libc::SIGKILL as u32,
            all: false,
        }))
        .await;
    if let Err(s) = killed {
        tracing::debug!(container_id = id, exec_id, error = s.message(), "kill exec");
    }
}

/// Deletes exec `exec_id` of container `id` (the shim answers once it copied all the output);
/// one already gone is fine.
pub(super) async fn delete(ctd: &Ctd, id: &str, exec_id: &str) {
    let deleted = ctd
        .tasks()
        .delete_process(ctd.req(DeleteProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        }))
        .await;
    if let Err(s) = deleted {
        if s.code() != Code::NotFound {
            tracing::debug!(
                container_id = id,
                exec_id,
                error = s.message(),
                "delete exec process"
            );
        }
    }
}

/// Removes the FIFO directories of streamed execs an earlier agent left (it was stopped in the
/// middle of one).
pub(super) fn remove_stale(state_dir: &Path) {
    if let Ok(dir) = std::fs::read_dir(state_dir.join("exec")) {
        for f in dir.flatten() {
            if f.file_name().to_string_lossy().starts_with(EXEC_PREFIX) {
                let _ = std::fs::remove_dir_all(f.path());
            }
        }
    }
}

struct ContainerdExec {
    ctd: Ctd,
    id: String,
    exec_id: String,
    dir: PathBuf,
    deleted: AtomicBool,
}

impl ContainerdExec {
    async fn wait_exit(&self) -> Result<u32> {
        let mut tasks = self.ctd.tasks();
        tasks
            .wait(self.ctd.req(WaitRequest {
                container_id: self.id.clone(),
                exec_id: self.exec_id.clone(),
            }))
            .await
            .map(|r| r.into_inner().exit_status)
            .map_err(|s| ctd_err("wait exec", &self.id, s))
    }

    async fn delete_once(&self) {
        if !self.deleted.swap(true, Ordering::SeqCst) {
            delete(&self.ctd, &self.id, &self.exec_id).await;
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[async_trait::async_trait]
impl ExecControl for ContainerdExec {
    async fn wait(&self) -> Result<u32> {
        let exit = self.wait_exit().await;
        self.delete_once().await;
        exit
    }

    async fn resize(&self, width: u32, height: u32) -> Result<()> {
        resize_pty(&self.ctd, &self.id, &self.exec_id, width, height).await
    }

    async fn close_stdin(&self) -> Result<()> {
        close_stdin(&self.ctd, &self.id, &self.exec_id).await
    }

    async fn end(&self) {
        if self.deleted.load(Ordering::SeqCst) {
            return;
        }
        kill(&self.ctd, &self.id, &self.exec_id).await;
        let _ = tokio::time::timeout(KILL_WAIT, self.wait_exit()).await;
        self.delete_once().await;
    }
}

impl Drop for ContainerdExec {
    fn drop(&mut self) {
        if !self.deleted.load(Ordering::SeqCst) {
            // dropped without an end (an error before the start): the FIFOs at least go
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Resizes the terminal of process `exec_id` (empty: the container's own) of container `id`.
pub(super) async fn resize_pty(
    ctd: &Ctd,
    id: &str,
    exec_id: &str,
    width: u32,
    height: u32,
) -> Result<()> {
    ctd.tasks()
        .resize_pty(ctd.req(ResizePtyRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            width,
            height,
        }))
        .await
        .map(drop)
        .map_err(|s| ctd_err("resize terminal", id, s))
}

/// Tells the shim to close its end of the stdin FIFO of process `exec_id` (empty: the
/// container's own) of container `id`: the process reads the end of its input once every other
/// writer closed theirs.
pub(super) async fn close_stdin(ctd: &Ctd, id: &str, exec_id: &str) -> Result<()> {
    ctd.tasks()
        .close_io(ctd.req(CloseIoRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            stdin: true,
        }))
        .await
        .map(drop)
        .map_err(|s| ctd_err("close stdin", id, s))
}
