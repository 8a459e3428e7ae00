//! The container log driver: `daemonset-agent log-driver ...`, a hidden mode of the binary that
//! containerd's runc shim starts for every container through a `binary://` log URI (see
//! [`DriverArgs::uri`]). The shim hands it the container's stdout on fd 3 and stderr on fd 4 and
//! waits until fd 5 is closed. It lives beside the shim, not in the agent, so output is kept
//! while the agent is stopped or restarting.
//!
//! Every line goes (a) to the container's log file in the CRI format ([`cri`]) and (b) to journald
//! over its native protocol ([`journal`]) with the container's fields. It is synchronous (no
//! tokio), single-threaded (poll on both pipes and a signalfd), and its memory is bounded: one
//! read buffer, one unfinished line per stream (at most [`cri::MAX_LINE`]), one output batch.
pub mod cri;
pub mod journal;

use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use cri::{LineSplitter, Stream};

/// The log file of one incarnation (`restarts`) of a container, laid out as the kubelet's
/// `/var/log/pods`: `STATE_DIR/logs/NAMESPACE_POD_UID/CONTAINER/RESTARTS.log`. The agent names it
/// when it starts the container; the local API reads it back. Every name is one directory level
/// whatever it holds ([`path_component`]): a pod or container name with `/` or `..` (from a local
/// manifest, or a server that does not validate) cannot reach outside the pod's log directory.
pub fn log_path(
    state_dir: &Path,
    pod: &crate::core::plan::PodKey,
    uid: &str,
    container: &str,
    restarts: u32,
) -> PathBuf {
    let dir = format!(
        "{}_{}_{}",
        path_component(&pod.namespace),
        path_component(&pod.name),
        path_component(uid)
    );
    state_dir
        .join("logs")
        .join(dir)
        .join(path_component(container).as_ref())
        .join(format!("{restarts}.log"))
}

/// `name` as one normal path component: `%`, `/` and control characters percent-encoded, `.`
/// and `..` encoded whole (`%2E%2E`), an empty name `%` (no encoding yields it); a valid
/// Kubernetes name (a DNS label or subdomain) comes back unchanged, and distinct names stay
/// distinct.
fn path_component(name: &str) -> std::borrow::Cow<'_, str> {
    const UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%').add(b'/');
    match name {
        "" => "%".into(),
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => percent_encoding::utf8_percent_encode(name, UNSAFE).into(),
    }
}

/// The query key (and so the argument) that marks a log-driver invocation; its value is the
/// version of the argument set.
pub const MARKER: &str = "log-driver";
pub const VERSION: &str = "1";

/// What the driver needs to know about its container; everything travels in the URI's query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverArgs {
    /// The container's log file (CRI format, appended; created with its directory).
    pub file: PathBuf,
    /// journald's native socket; None: the file only.
    pub journal: Option<PathBuf>,
    pub pod: String,
    pub namespace: String,
    pub container: String,
    pub daemonset: String,
    pub node: String,
    /// Rotate the file when it reaches this size (0: never), keeping `max_files` files: `file`
    /// and `file.1` (newest) .. `file.N-1` (oldest), as the kubelet's containerLogMaxSize and
    /// containerLogMaxFiles.
    pub max_size: u64,
    pub max_files: u32,
}

/// Everything but RFC 3986's unreserved characters is escaped in a query value.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// A path keeps its slashes.
const PATH: &percent_encoding::AsciiSet = &QUERY_VALUE.remove(b'/');

impl DriverArgs {
    /// `binary:///BINARY?log-driver=1&file=...`: the stdout/stderr string of Tasks.Create that
    /// makes the shim start `binary` (absolute) as this container's log driver. The shim
    /// (containerd pkg/process/io.go) passes every query pair as two arguments, in no fixed order.
    pub fn uri(&self, binary: &Path) -> String {
        let mut s = String::from("binary://");
        s.extend(percent_encoding::percent_encode(
            binary.as_os_str().as_bytes(),
            PATH,
        ));
        let mut pairs: Vec<(&str, &[u8])> = vec![
            (MARKER, VERSION.as_bytes()),
            ("file", self.file.as_os_str().as_bytes()),
        ];
        if let Some(j) = &self.journal {
            pairs.push(("journal", j.as_os_str().as_bytes()));
        }
        let (size, files) = (self.max_size.to_string(), self.max_files.to_string());
        if self.max_size > 0 {
            pairs.push(("max-size", size.as_bytes()));
            pairs.push(("max-files", files.as_bytes()));
        }
        for (k, v) in [
            ("pod", &self.pod),
            ("namespace", &self.namespace),
            ("container", &self.container),
            ("daemonset", &self.daemonset),
            ("node", &self.node),
        ] {
            pairs.push((k, v.as_bytes()));
        }
        for (i, (k, v)) in pairs.into_iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            s.push_str(k);
            s.push('=');
            s.extend(percent_encoding::percent_encode(v, QUERY_VALUE));
        }
        s
    }

    /// Recognizes a driver invocation from the process arguments (without argv[0]): `key value`
    /// pairs in any order, one of them `log-driver 1`. Ok(None): not a driver invocation.
    pub fn parse(args: &[OsString]) -> Result<Option<DriverArgs>, String> {
        let is_driver =
            args.len().is_multiple_of(2) && args.chunks(2).any(|p| p[0] == OsStr::new(MARKER));
        if !is_driver {
            return Ok(None);
        }
        let mut a = DriverArgs::default();
        let mut version = None;
        for p in args.chunks(2) {
            let v = &p[1];
            let text = || v.to_string_lossy().into_owned();
            match p[0].to_str() {
                Some(MARKER) => version = Some(text()),
                Some("file") => a.file = PathBuf::from(v),
                Some("journal") if !v.is_empty() => a.journal = Some(PathBuf::from(v)),
                Some("pod") => a.pod = text(),
                Some("namespace") => a.namespace = text(),
                Some("container") => a.container = text(),
                Some("daemonset") => a.daemonset = text(),
                Some("node") => a.node = text(),
                Some("max-size") => a.max_size = text().parse().unwrap_or(0),
                Some("max-files") => a.max_files = text().parse().unwrap_or(0),
                // keys of a newer agent: ignored, so an old driver binary still runs
                _ => {}
            }
        }
        if version.as_deref() != Some(VERSION) {
            return Err(format!("log-driver: unsupported version {version:?}"));
        }
        if !a.file.is_absolute() {
            return Err(format!("log-driver: file {:?} is not absolute", a.file));
        }
        Ok(Some(a))
    }
}

/// Runs the driver when this process was started as one; called first thing in `main`, before
/// any runtime or thread exists.
pub fn main_if_invoked() -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match DriverArgs::parse(&args) {
        Ok(None) => None,
        Ok(Some(a)) => Some(run(&a, std::env::var("CONTAINER_ID").unwrap_or_default())),
        Err(e) => {
            // still drain the pipes so the container never blocks on a full pipe
            eprintln!("daemonset-agent {e}");
            Some(run(&DriverArgs::default(), String::new()))
        }
    }
}

const STDOUT_FD: i32 = 3;
const STDERR_FD: i32 = 4;
const READY_FD: i32 = 5;
const READ_BUF: usize = 32 * 1024;
const OUT_BATCH: usize = 64 * 1024;

struct Sink {
    file: Option<std::fs::File>,
    rotation: Rotation,
    out: Vec<u8>,
    journal: Option<journal::Journal>,
    enc: journal::Encoder,
    file_errors: u64,
}

impl Sink {
    fn record(&mut self, stream: Stream, msg: &[u8], partial: bool) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or_default();
        if self.file.is_some() {
            cri::format_record(&mut self.out, now, stream, partial, msg);
            // a batch never carries the file far past its rotation size
            if self.out.len() >= OUT_BATCH || self.rotation.due_with(self.out.len() as u64) {
                self.flush();
            }
        }
        if let Some(j) = &mut self.journal {
            let priority = match stream {
                Stream::Stdout => 6,
                Stream::Stderr => 3,
            };
            j.send(self.enc.entry(priority, msg, partial));
        }
    }

    fn flush(&mut self) {
        if let Some(f) = &mut self.file {
            if !self.out.is_empty() && f.write_all(&self.out).is_err() {
                self.file_errors += 1;
            }
            self.rotation.written += self.out.len() as u64;
            if self.rotation.due() {
                match self.rotation.rotate() {
                    Ok(f) => self.file = Some(f),
                    Err(_) => self.file_errors += 1,
                }
            }
        }
        self.out.clear();
    }
}

/// Size-based rotation of the log file, done by the driver that alone writes it.
struct Rotation {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    /// Bytes in the current file.
    written: u64,
}

impl Rotation {
    fn due(&self) -> bool {
        self.due_with(0)
    }

    /// Due once `pending` more bytes are written.
    fn due_with(&self, pending: u64) -> bool {
        self.max_size > 0 && self.written + pending >= self.max_size
    }

    /// `file.N-2` -> `file.N-1` .. `file` -> `file.1` (the oldest beyond N-1 is replaced), then a
    /// new empty `file`. With fewer than 2 files the current one is cut instead.
    fn rotate(&mut self) -> std::io::Result<std::fs::File> {
        let numbered = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if self.max_files >= 2 {
            for i in (1..self.max_files - 1).rev() {
                let from = numbered(i);
                if from.exists() {
                    std::fs::rename(&from, numbered(i + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.written = 0;
        open_log(&self.path)
    }
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Started by hand (not by a shim), fds 3 to 5 may be closed: put /dev/null there, so that the
/// files this process opens never take those numbers (and fd 5 is never one of ours when closed).
/// open() returns the lowest free number: /dev/null fills the closed ones up to fd 5 in turn.
fn reserve_shim_fds() {
    while let Ok(null) = std::fs::File::open("/dev/null") {
        if null.as_raw_fd() > READY_FD {
            break;
        }
        // kept open for the life of the process, in the slot it took
        let _ = null.into_raw_fd();
    }
}

/// The shim's three pipes (stdout, stderr, ready), owned from here on.
fn shim_fds() -> [OwnedFd; 3] {
    reserve_shim_fds();
    // SAFETY: fds 3 to 5 are open (the shim's pipes, or /dev/null put there just now) and
    // nothing else in this process refers to them: each is taken into ownership once, here.
    [STDOUT_FD, STDERR_FD, READY_FD].map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A signalfd for SIGTERM and SIGINT (blocked first, so they queue there): the shim sends
/// SIGTERM when the task is deleted, after closing its ends of the pipes. None if it cannot be
/// made (the driver then ends with the pipes only).
fn signal_fd() -> Option<SignalFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    // the process has one thread: its mask is the process's
    set.thread_block().ok()?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok()
}

enum ReadResult {
    Open,
    Closed,
}

fn read_once(
    fd: &OwnedFd,
    buf: &mut [u8],
    split: &mut LineSplitter,
    stream: Stream,
    sink: &mut Sink,
) -> ReadResult {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(0) => return ReadResult::Closed,
            Ok(n) => {
                split.push(&buf[..n], &mut |m, p| sink.record(stream, m, p));
                return ReadResult::Open;
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return ReadResult::Open,
            Err(_) => return ReadResult::Closed,
        }
    }
}

/// The driver proper: reads both pipes until both reach end of file (or SIGTERM, after which
/// what is already in the pipes is still written), then exits.
pub fn run(args: &DriverArgs, container_id: String) -> ExitCode {
    let [stdout, stderr, ready] = shim_fds();
    let sigfd = signal_fd();
    let mut setup_errors = Vec::new();
    let file = if args.file.as_os_str().is_empty() {
        None
    } else {
        match open_log(&args.file) {
            Ok(f) => Some(f),
            Err(e) => {
                setup_errors.push(format!("open {}: {e}", args.file.display()));
                None
            }
        }
    };
    let journal = args
        .journal
        .as_deref()
        .and_then(|p| match journal::Journal::new(p) {
            Ok(j) => Some(j),
            Err(e) => {
                setup_errors.push(format!("journald socket: {e}"));
                None
            }
        });
    let enc = journal::Encoder::new([
        ("SYSLOG_IDENTIFIER", args.container.as_str()),
        ("CONTAINER_ID", container_id.as_str()),
        ("CONTAINER_NAME", args.container.as_str()),
        ("POD", args.pod.as_str()),
        ("NAMESPACE", args.namespace.as_str()),
        ("DAEMONSET", args.daemonset.as_str()),
        ("NODE", args.node.as_str()),
    ]);
    let rotation = Rotation {
        path: args.file.clone(),
        max_size: args.max_size,
        max_files: args.max_files,
        written: file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len())
            .unwrap_or(0),
    };
    let mut sink = Sink {
        file,
        rotation,
        out: Vec::with_capacity(OUT_BATCH + cri::MAX_LINE + 64),
        journal,
        enc,
        file_errors: 0,
    };
    let pipes = [stdout, stderr];
    for fd in &pipes {
        if let Ok(fl) = fcntl(fd, FcntlArg::F_GETFL) {
            let _ = fcntl(
                fd,
                FcntlArg::F_SETFL(OFlag::from_bits_retain(fl) | OFlag::O_NONBLOCK),
            );
        }
    }
    // ready: the shim goes on creating the task
    drop(ready);
    for e in &setup_errors {
        report(&args.journal, &container_id, e);
    }

    let mut buf = vec![0u8; READ_BUF];
    let mut split = [LineSplitter::new(), LineSplitter::new()];
    let streams = [Stream::Stdout, Stream::Stderr];
    let mut open = [true, true];
    let mut terminating = false;
    while open[0] || open[1] {
        if terminating {
            // drain: read what is in the pipes now, stop when they are empty
            for i in 0..2 {
                // bounded: a writer that never stops is not waited for
                let mut reads = 0;
                while open[i] && reads < 1024 && readable(&pipes[i]) {
                    reads += 1;
                    if let ReadResult::Closed =
                        read_once(&pipes[i], &mut buf, &mut split[i], streams[i], &mut sink)
                    {
                        open[i] = false;
                    }
                }
            }
            break;
        }
        // the open pipes, then the signalfd
        let watched: Vec<usize> = (0..2).filter(|i| open[*i]).collect();
        let mut fds: Vec<PollFd> = watched
            .iter()
            .map(|i| PollFd::new(pipes[*i].as_fd(), PollFlags::POLLIN))
            .collect();
        if let Some(s) = &sigfd {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        for (k, &i) in watched.iter().enumerate() {
            if revents[k].is_empty() {
                continue;
            }
            if revents[k].contains(PollFlags::POLLNVAL) {
                open[i] = false;
                continue;
            }
            if let ReadResult::Closed =
                read_once(&pipes[i], &mut buf, &mut split[i], streams[i], &mut sink)
            {
                open[i] = false;
            }
        }
        sink.flush();
        if sigfd.is_some() && revents[watched.len()].contains(PollFlags::POLLIN) {
            terminating = true;
        }
    }
    for i in 0..2 {
        split[i].finish(&mut |m, p| sink.record(streams[i], m, p));
    }
    sink.flush();
    let dropped = sink.journal.as_ref().map(|j| j.dropped).unwrap_or_default();
    if sink.file_errors > 0 || dropped > 0 {
        report(
            &args.journal,
            &container_id,
            &format!(
                "container output incomplete: {} failed writes to {}, {dropped} entries not delivered to journald",
                sink.file_errors,
                args.file.display()
            ),
        );
    }
    ExitCode::SUCCESS
}

/// Whether a read of the pipe would return at once (bytes, or end of file) rather than block.
fn readable(fd: &OwnedFd) -> bool {
    let mut p = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut p, PollTimeout::ZERO).is_ok_and(|n| n > 0)
        && p[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
}

/// A problem of the driver itself, to journald as the agent (its stderr is /dev/null).
fn report(journal: &Option<PathBuf>, container_id: &str, message: &str) {
    let path = journal
        .clone()
        .unwrap_or_else(|| PathBuf::from(journal::DEFAULT_SOCKET));
    if let Ok(mut j) = journal::Journal::new(&path) {
        let mut enc = journal::Encoder::new([
            ("SYSLOG_IDENTIFIER", "daemonset-agent"),
            ("CONTAINER_ID", container_id),
        ]);
        j.send(enc.entry(4, format!("log driver: {message}").as_bytes(), false));
    }
}

/// Arguments as the shim passes them (tests): the URI's query pairs, decoded.
pub fn args_from_uri(uri: &str) -> Vec<OsString> {
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push(OsString::from_vec(query_decode(k)));
        out.push(OsString::from_vec(query_decode(v)));
    }
    out
}

/// A query component as Go's url.ParseQuery decodes it ('+' is a space).
fn query_decode(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(&s.replace('+', " ")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name with `..` or `/` (a pod from a local manifest, a container name the API did not
    /// check) stays one directory level of its own under `STATE_DIR/logs`; valid names keep the
    /// kubelet's layout.
    #[test]
    fn log_path_stays_in_the_pod_log_dir() {
        use std::path::Component;
        let state = Path::new("/var/lib/daemonset-agent");
        let key = |ns: &str, name: &str| crate::core::plan::PodKey {
            namespace: ns.into(),
            name: name.into(),
        };
        assert_eq!(
            log_path(state, &key("default", "mon-x"), "u1", "main", 3),
            state.join("logs/default_mon-x_u1/main/3.log")
        );
        let hostile = ["..", ".", "../..", "a/../../b", "/etc", "x/", "", "%2e%2e"];
        for ns in hostile {
            for name in hostile {
                for uid in hostile {
                    for c in hostile {
                        let p = log_path(state, &key(ns, name), uid, c, 0);
                        let below: Vec<Component> = p
                            .strip_prefix(state.join("logs"))
                            .unwrap_or_else(|_| panic!("{p:?} is outside the logs"))
                            .components()
                            .collect();
                        assert_eq!(below.len(), 3, "{ns:?} {name:?} {uid:?} {c:?}: {p:?}");
                        assert!(
                            below.iter().all(|c| matches!(c, Component::Normal(_))),
                            "{ns:?} {name:?} {uid:?} {c:?}: {p:?}"
                        );
                    }
                }
            }
        }
        // distinct names, distinct paths
        assert_ne!(
            log_path(state, &key("a", "b"), "u", "..", 0),
            log_path(state, &key("a", "b"), "u", "%2E%2E", 0)
        );
    }

    fn sample() -> DriverArgs {
        DriverArgs {
            file: PathBuf::from("/var/lib/daemonset-agent/logs/default_mon-x_u1/main/0.log"),
            journal: Some(PathBuf::from("/run/systemd/journal/socket")),
            pod: "mon-x".into(),
            namespace: "default".into(),
            container: "main".into(),
            daemonset: "mon".into(),
            node: "worker-1".into(),
            max_size: 10 * 1024 * 1024,
            max_files: 5,
        }
    }

    #[test]
    fn the_file_rotates_at_its_size_keeping_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut r = Rotation {
            path: path.clone(),
            max_size: 10,
            max_files: 3,
            written: 0,
        };
        let mut f = open_log(&path).unwrap();
        for round in 0..4u8 {
            f.write_all(&[b'a' + round; 12]).unwrap();
            r.written += 12;
            assert!(r.due());
            f = r.rotate().unwrap();
            assert!(!r.due());
        }
        f.write_all(b"now").unwrap();
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("0.log"), "now");
        assert_eq!(read("0.log.1"), "d".repeat(12), "newest rotated");
        assert_eq!(read("0.log.2"), "c".repeat(12), "oldest kept");
        assert!(!dir.path().join("0.log.3").exists(), "3 files at most");
        let never = Rotation {
            path,
            max_size: 0,
            max_files: 3,
            written: u64::MAX,
        };
        assert!(!never.due(), "max_size 0: never");
    }

    #[test]
    fn uri_round_trips_through_the_shims_argument_passing() {
        let mut a = sample();
        a.file = PathBuf::from("/tmp/odd dir/a&b=c%d+e?.log");
        a.pod = "p;q#r".into();
        let uri = a.uri(Path::new("/usr/local/bin/daemon set-agent"));
        assert!(
            uri.starts_with("binary:///usr/local/bin/daemon%20set-agent?log-driver=1&file=%2Ftmp%2Fodd%20dir%2Fa%26b%3Dc%25d%2Be%3F.log&journal="),
            "{uri}"
        );
        let mut args = args_from_uri(&uri);
        assert_eq!(DriverArgs::parse(&args).unwrap(), Some(a.clone()));
        // the shim iterates a Go map: any order of pairs
        let mut pairs: Vec<Vec<OsString>> = args.chunks(2).map(|c| c.to_vec()).collect();
        pairs.reverse();
        args = pairs.concat();
        assert_eq!(DriverArgs::parse(&args).unwrap(), Some(a));
    }

    #[test]
    fn only_driver_invocations_are_recognized() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            DriverArgs::parse(&os(&["agent", "--node-name", "x"])).unwrap(),
            None
        );
        assert_eq!(
            DriverArgs::parse(&os(&["logs", "log-driver"])).unwrap(),
            None
        );
        assert_eq!(DriverArgs::parse(&os(&[])).unwrap(), None);
        assert!(DriverArgs::parse(&os(&["log-driver", "9", "file", "/x"])).is_err());
        assert!(DriverArgs::parse(&os(&["log-driver", "1", "file", "rel"])).is_err());
        let a = DriverArgs::parse(&os(&[
            "file",
            "/x",
            "future-key",
            "v",
            "log-driver",
            "1",
            "journal",
            "",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((a.file, a.journal), (PathBuf::from("/x"), None));
    }
}
