//! A container's log, read back from the files the log driver writes
//! (`STATE_DIR/logs/NS_POD_UID/CONTAINER/RESTARTS.log`, CRI records): the one reader behind the
//! node API's `containerLogs` (kubectl logs through the server) and the local API's
//! `daemonset-agent logs`.
//!
//! Bounded: the file is read in [`CHUNK`]s and what is decoded goes through a channel of
//! [`QUEUED`] chunks; a reader that takes nothing for [`SEND_IDLE`] ends its stream, so a slow
//! or stuck client never makes the agent buffer more than that. `tailLines` keeps only the last
//! lines while it scans. Following polls the file's size every [`FOLLOW_POLL`] (a new line
//! reaches the client within that), notices a rotation (the path names another file: read on
//! from its start) and ends once the container no longer runs and its file is read.
use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

use crate::agent::localapi::{PodsView, Reported};
use crate::logdriver::cri::Decoder;

/// Bytes read from the file at a time.
pub const CHUNK: usize = 32 * 1024;
/// Bytes read at a time while following (what a container writes between two looks).
pub const FOLLOW_CHUNK: usize = 4 * 1024;
/// Decoded chunks waiting for the client, per stream.
pub const QUEUED: usize = 4;
/// A client that takes nothing for this long loses its stream.
pub const SEND_IDLE: Duration = Duration::from_secs(300);
/// How often a followed file is looked at again.
pub const FOLLOW_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("reading log {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a client asks of a log (the kubelet's `PodLogOptions`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    /// The last N lines only.
    pub tail_lines: Option<u64>,
    /// Lines stamped at or after this only.
    pub since: Option<DateTime<Utc>>,
    /// Each line starts with its RFC 3339 timestamp and a space.
    pub timestamps: bool,
    /// At most this many bytes.
    pub limit_bytes: Option<u64>,
    /// The container's previous incarnation.
    pub previous: bool,
}

impl LogOptions {
    /// From the query of `containerLogs` (and of `pods/NAME/log`): `follow`, `tailLines`,
    /// `sinceSeconds` or `sinceTime`, `timestamps`, `limitBytes`, `previous`; `now` for
    /// `sinceSeconds`.
    pub fn from_query(query: Option<&str>, now: DateTime<Utc>) -> Result<LogOptions, LogError> {
        let mut o = LogOptions::default();
        let bad = |k: &str, v: &str| LogError::BadRequest(format!("{k}: invalid value {v:?}"));
        let flag = |k: &str, v: &str| match v {
            "" | "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(bad(k, v)),
        };
        let positive = |k: &str, v: &str| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(|n| n as u64)
                .ok_or_else(|| bad(k, v))
        };
        let mut since_seconds = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .to_string();
            match k {
                "follow" => o.follow = flag(k, &v)?,
                "timestamps" => o.timestamps = flag(k, &v)?,
                "previous" => o.previous = flag(k, &v)?,
                "tailLines" => o.tail_lines = Some(positive(k, &v)?),
                "limitBytes" => {
                    o.limit_bytes = Some(positive(k, &v)?).filter(|n| *n > 0);
                    if o.limit_bytes.is_none() {
                        return Err(LogError::BadRequest(
                            "limitBytes: must be greater than 0".into(),
                        ));
                    }
                }
                "sinceSeconds" => {
                    let n = positive(k, &v)?;
                    if n == 0 {
                        return Err(LogError::BadRequest(
                            "sinceSeconds: must be greater than 0".into(),
                        ));
                    }
                    since_seconds = Some(n);
                }
                "sinceTime" => {
                    o.since = Some(
                        DateTime::parse_from_rfc3339(&v)
                            .map_err(|_| bad(k, &v))?
                            .with_timezone(&Utc),
                    )
                }
                _ => {}
            }
        }
        if let Some(n) = since_seconds {
            if o.since.is_some() {
                return Err(LogError::BadRequest(
                    "at most one of sinceTime or sinceSeconds may be specified".into(),
                ));
            }
            o.since = Some(now - chrono::Duration::seconds(n.min(i64::MAX as u64 / 2) as i64));
        }
        Ok(o)
    }
}

/// The log file of `container` of pod `namespace/pod` on this node (its previous incarnation's
/// with `previous`), and whether that incarnation still runs. An empty `container` names the
/// pod's only container.
pub fn locate(
    state_dir: &Path,
    pods: &PodsView,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<(PathBuf, bool), LogError> {
    let Reported {
        pod: d, status: s, ..
    } = pods
        .lock()
        .map_err(|_| LogError::NotFound("the pod view is poisoned".into()))?
        .iter()
        .find(|(k, _)| k.namespace == namespace && k.name == pod)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| LogError::NotFound(format!("pod {namespace}/{pod} is not on this node")))?;
    let statuses = s.container_statuses.unwrap_or_default();
    let c = match (container, statuses.len()) {
        ("", 1) => statuses[0].clone(),
        ("", _) => {
            return Err(LogError::BadRequest(format!(
                "a container name must be specified for pod {pod}, choose one of: {:?}",
                statuses.iter().map(|c| c.name.as_str()).collect::<Vec<_>>()
            )))
        }
        (name, _) => statuses
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| {
                LogError::NotFound(format!("container {name} is not valid for pod {pod}"))
            })?,
    };
    let restarts = u32::try_from(c.restart_count).unwrap_or_default();
    let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
    let (restarts, running) = match previous {
        false => (restarts, running),
        true if restarts == 0 => {
            return Err(LogError::BadRequest(format!(
                "previous terminated container \"{}\" in pod \"{pod}\" not found",
                c.name
            )))
        }
        true => (restarts - 1, false),
    };
    let path = crate::logdriver::log_path(state_dir, &d.key, &d.uid, &c.name, restarts);
    Ok((path, running))
}

/// Turns the decoder's stamped lines into what the client asked for: lines before `since`
/// dropped, the stamps kept only with `timestamps`, at most `limit_bytes` out. Pure; fed the
/// decoder's output in pieces, it holds at most one unfinished line.
#[derive(Debug)]
pub struct LineFilter {
    since: Option<DateTime<Utc>>,
    timestamps: bool,
    left: Option<u64>,
    carry: Vec<u8>,
}

impl LineFilter {
    pub fn new(o: &LogOptions) -> LineFilter {
        LineFilter {
            since: o.since,
            timestamps: o.timestamps,
            left: o.limit_bytes,
            carry: Vec::new(),
        }
    }

    /// Whether the byte limit is used up.
    pub fn done(&self) -> bool {
        self.left == Some(0)
    }

    /// The complete lines of `data` (after what was carried) into `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.carry.extend_from_slice(data);
        let mut start = 0;
        while let Some(i) = self.carry[start..].iter().position(|b| *b == b'\n') {
            let end = start + i + 1;
            let line = self.carry[start..end].to_vec();
            self.line(&line, out);
            start = end;
        }
        self.carry.drain(..start);
    }

    /// The end: an unfinished last line goes out too.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let line = std::mem::take(&mut self.carry);
        if !line.is_empty() {
            self.line(&line, out);
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if self.done() {
            return;
        }
        // a stamped line is "RFC3339 message"; a line of a raw file has no stamp
        let stamp = line.iter().position(|b| *b == b' ').and_then(|i| {
            let t = std::str::from_utf8(&line[..i]).ok()?;
            let at = DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc);
            Some((i, at))
        });
        let text = match stamp {
            Some((_, at)) if self.since.is_some_and(|s| at < s) => return,
            Some((i, _)) if !self.timestamps => &line[i + 1..],
            _ => line,
        };
        let n = match self.left {
            Some(left) => {
                let n = text.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                self.left = Some(left - n as u64);
                n
            }
            None => text.len(),
        };
        out.extend_from_slice(&text[..n]);
    }
}

/// Keeps the last `n` lines of what it is given.
struct Tail {
    n: usize,
    lines: VecDeque<Vec<u8>>,
}

impl Tail {
    fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let end = data
                .iter()
                .position(|b| *b == b'\n')
                .map_or(data.len(), |i| i + 1);
            match self.lines.back_mut() {
                Some(last) if last.last() != Some(&b'\n') => last.extend_from_slice(&data[..end]),
                _ => self.lines.push_back(data[..end].to_vec()),
            }
            while self.lines.len() > self.n {
                self.lines.pop_front();
            }
            data = &data[end..];
        }
    }
}

/// A file being read, the identity of the file it is (to notice a rotation) and how far it was
/// read.
struct Source {
    path: PathBuf,
    file: tokio::fs::File,
    /// While following: the same open file (a dup, sharing the offset) read in place, since it
    /// holds only what was just written (in the page cache); a follower then never waits in
    /// tokio's blocking pool, nor holds one of its threads.
    inline: Option<std::fs::File>,
    inode: (u64, u64),
    pos: u64,
}

/// What a followed path holds now, against what was read of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    Same,
    Grew,
    /// The path names another file (the driver rotated it).
    Rotated,
    /// The file is shorter than what was read.
    Truncated,
}

impl Source {
    async fn open(path: &Path) -> Result<Source, LogError> {
        let io = |source| LogError::Io {
            path: path.into(),
            source,
        };
        let file = tokio::fs::File::open(path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                LogError::NotFound(format!("log {} does not exist", path.display()))
            } else {
                io(e)
            }
        })?;
        let meta = file.metadata().await.map_err(io)?;
        Ok(Source {
            path: path.into(),
            file,
            inode: (meta.dev(), meta.ino()),
            inline: None,
            pos: 0,
        })
    }

    /// Reads in place from now on.
    async fn follow_inline(&mut self) {
        if let Ok(dup) = self.file.try_clone().await {
            self.inline = dup.try_into_std().ok();
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, LogError> {
        let read = match self.inline.as_mut() {
            Some(f) => std::io::Read::read(f, buf),
            None => self.file.read(buf).await,
        };
        let n = read.map_err(|source| LogError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.pos += n as u64;
        Ok(n)
    }

    /// One stat of the path, made in place: an idle follower costs no more than that per
    /// [`FOLLOW_POLL`] (no trip through the blocking pool).
    fn look(&self) -> Look {
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) != self.inode => Look::Rotated,
            Ok(m) if m.len() > self.pos => Look::Grew,
            Ok(m) if m.len() < self.pos => Look::Truncated,
            _ => Look::Same,
        }
    }

    async fn rewind(&mut self) {
        use tokio::io::AsyncSeekExt as _;
        let start = std::io::SeekFrom::Start(0);
        let done = match self.inline.as_mut() {
            Some(f) => std::io::Seek::seek(f, start).is_ok(),
            None => self.file.seek(start).await.is_ok(),
        };
        if done {
            self.pos = 0;
        }
    }
}

/// Whether the container whose log is read still runs (a followed log ends when not).
pub type StillRunning = Box<dyn Fn() -> bool + Send>;

/// Streams the log at `path` as `opts` ask, in chunks, until its end (or, following, until the
/// container stops running or the receiver goes away).
pub async fn stream(
    path: &Path,
    opts: LogOptions,
    still_running: StillRunning,
) -> Result<mpsc::Receiver<Result<Bytes, LogError>>, LogError> {
    start(path, opts, still_running, None).await
}

/// What is written to the log at `path` from when this returns (`follow` with `tailLines=0`,
/// as `attach` shows a container's output), until the container stops running. It returns once
/// the end of what the file holds is known: a line the caller makes the container write
/// afterwards (an attach's own input, echoed) is streamed, never taken for the past.
pub async fn follow_from_now(
    path: &Path,
    still_running: StillRunning,
) -> Result<mpsc::Receiver<Result<Bytes, LogError>>, LogError> {
    let opts = LogOptions {
        follow: true,
        tail_lines: Some(0),
        ..LogOptions::default()
    };
    let (ready, following) = tokio::sync::oneshot::channel();
    let rx = start(path, opts, still_running, Some(ready)).await?;
    // (dropped unsent when the pump failed first: its error is on `rx`)
    let _ = following.await;
    Ok(rx)
}

async fn start(
    path: &Path,
    opts: LogOptions,
    still_running: StillRunning,
    following: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<mpsc::Receiver<Result<Bytes, LogError>>, LogError> {
    let source = Source::open(path).await?;
    let (tx, rx) = mpsc::channel(QUEUED);
    tokio::spawn(async move {
        if let Err(e) = pump(source, opts, still_running, following, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    Ok(rx)
}

/// Why pumping stopped early (not an error for the client).
enum Stop {
    Gone,
}

async fn send(tx: &mpsc::Sender<Result<Bytes, LogError>>, data: Vec<u8>) -> Result<(), Stop> {
    if data.is_empty() {
        return Ok(());
    }
    tx.send_timeout(Ok(Bytes::from(data)), SEND_IDLE)
        .await
        .map_err(|_| Stop::Gone)
}

async fn pump(
    mut src: Source,
    opts: LogOptions,
    still_running: StillRunning,
    following: Option<tokio::sync::oneshot::Sender<()>>,
    tx: &mpsc::Sender<Result<Bytes, LogError>>,
) -> Result<(), LogError> {
    let mut decoder = Decoder::new(true);
    let mut filter = LineFilter::new(&opts);
    let mut tail = opts.tail_lines.map(|n| Tail {
        n: usize::try_from(n).unwrap_or(usize::MAX),
        lines: VecDeque::new(),
    });
    let mut buf = vec![0u8; CHUNK];
    let (mut decoded, mut out) = (Vec::new(), Vec::new());
    // what the file holds now
    loop {
        let n = src.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        decoder.push(&buf[..n], &mut decoded);
        filter.push(&decoded, &mut out);
        decoded.clear();
        if let Some(t) = tail.as_mut() {
            t.push(&out);
            out.clear();
        } else if send(tx, std::mem::take(&mut out)).await.is_err() {
            return Ok(());
        }
        if filter.done() {
            return Ok(());
        }
    }
    if !opts.follow {
        decoder.finish(&mut decoded);
        filter.push(&decoded, &mut out);
        filter.finish(&mut out);
        decoded.clear();
    }
    if let Some(t) = tail.as_mut() {
        t.push(&out);
        out = t.lines.drain(..).flatten().collect();
    }
    if send(tx, std::mem::take(&mut out)).await.is_err() || !opts.follow {
        return Ok(());
    }
    // following: what the file gains, until the container stops
    buf.truncate(FOLLOW_CHUNK);
    buf.shrink_to_fit();
    src.follow_inline().await;
    // all up to `src.pos` was read: anything written from now on is read below
    if let Some(f) = following {
        let _ = f.send(());
    }
    let mut last_look = false;
    loop {
        let look = src.look();
        if matches!(look, Look::Grew | Look::Rotated) {
            let n = src.read(&mut buf).await?;
            if n > 0 {
                decoder.push(&buf[..n], &mut decoded);
                filter.push(&decoded, &mut out);
                decoded.clear();
                if send(tx, std::mem::take(&mut out)).await.is_err() || filter.done() {
                    return Ok(());
                }
                continue;
            }
        }
        match look {
            // rotated: the rest of the old file was read; go on with the new one
            Look::Rotated => {
                if let Ok(next) = Source::open(&src.path.clone()).await {
                    src = next;
                    src.follow_inline().await;
                    continue;
                }
            }
            Look::Truncated => {
                src.rewind().await;
                continue;
            }
            Look::Same | Look::Grew => {}
        }
        if last_look {
            decoder.finish(&mut decoded);
            filter.push(&decoded, &mut out);
            filter.finish(&mut out);
            let _ = send(tx, out).await;
            return Ok(());
        }
        if tx.is_closed() {
            return Ok(());
        }
        last_look = !still_running();
        if !last_look {
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn options_read_kubectls_query() {
        let now = at("2026-11-26T10:00:00Z");
        let o = LogOptions::from_query(
            Some("follow=true&tailLines=5&timestamps=true&limitBytes=100&previous=true&sinceSeconds=60"),
            now,
        )
        .unwrap();
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                tail_lines: Some(5),
                since: Some(at("2026-11-26T09:59:00Z")),
                timestamps: true,
                limit_bytes: Some(100),
                previous: true,
            }
        );
        let t = LogOptions::from_query(Some("sinceTime=2026-11-26T09%3A00%3A00Z"), now).unwrap();
        assert_eq!(t.since, Some(at("2026-11-26T09:00:00Z")));
        for bad in [
            "tailLines=-1",
            "limitBytes=0",
            "follow=maybe",
            "sinceSeconds=1&sinceTime=2026-11-26T09:00:00Z",
            "sinceTime=yesterday",
        ] {
            assert!(
                matches!(
                    LogOptions::from_query(Some(bad), now),
                    Err(LogError::BadRequest(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_filter_drops_early_lines_strips_stamps_and_stops_at_the_limit() {
        let stamped =
            b"2026-11-26T09:00:00.1Z one\n2026-11-26T10:00:00.2Z two\n2026-11-26T10:00:01Z thr";
        let mut o = LogOptions {
            since: Some(at("2026-11-26T09:30:00Z")),
            ..Default::default()
        };
        let mut out = Vec::new();
        let mut f = LineFilter::new(&o);
        // fed in odd pieces
        for piece in stamped.chunks(7) {
            f.push(piece, &mut out);
        }
        assert_eq!(out, b"two\n");
        f.finish(&mut out);
        assert_eq!(out, b"two\nthr");

        o.timestamps = true;
        o.since = None;
        o.limit_bytes = Some(30);
        let mut out = Vec::new();
        let mut f = LineFilter::new(&o);
        f.push(stamped, &mut out);
        f.finish(&mut out);
        assert_eq!(out, &stamped[..30]);
        assert!(f.done());

        // a raw file's lines pass as they are
        let mut out = Vec::new();
        let mut f = LineFilter::new(&LogOptions::default());
        f.push(b"plain line\nnext", &mut out);
        f.finish(&mut out);
        assert_eq!(out, b"plain line\nnext");
    }

    #[test]
    fn the_tail_keeps_the_last_lines_across_pieces() {
        let mut t = Tail {
            n: 2,
            lines: VecDeque::new(),
        };
        t.push(b"a\nb");
        t.push(b"b\nc\nd");
        let kept: Vec<u8> = t.lines.into_iter().flatten().collect();
        assert_eq!(kept, b"c\nd");
    }

    /// An attach follows the log from now and at once writes its client's input, which the
    /// container echoes into the log: the echo is the attach's to see, however much the file
    /// held before (kubectl 1.27's first attach lost its own first line when the reader was
    /// still reading the file's past as the echo came: the past is dropped with `tailLines=0`).
    #[tokio::test]
    async fn following_from_now_sees_a_line_written_as_soon_as_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let past: String = (0..20_000)
            .map(|i| format!("2026-11-26T09:00:00.000000001Z stdout F old line {i}\n"))
            .collect();
        std::fs::write(&path, past).unwrap();
        let mut rx = follow_from_now(&path, Box::new(|| true)).await.unwrap();
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"2026-11-26T10:00:00Z stdout F mine\n")
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        let first = first.expect("the line written after following began never came");
        assert_eq!(&first.unwrap().unwrap()[..], b"mine\n");
    }

    /// A CRI file on disk, streamed with each option the way a client reads it.
    #[tokio::test]
    async fn a_cri_file_streams_with_tail_since_and_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "2026-11-26T09:00:00.000000001Z stdout F one\n\
             2026-11-26T10:00:00.000000001Z stderr P tw\n\
             2026-11-26T10:00:00.000000002Z stderr F o\n\
             2026-11-26T10:00:01.000000001Z stdout F three\n",
        )
        .unwrap();
        async fn all(path: &Path, o: LogOptions) -> String {
            let mut rx = stream(path, o, Box::new(|| false)).await.unwrap();
            let mut got = Vec::new();
            while let Some(c) = rx.recv().await {
                got.extend_from_slice(&c.unwrap());
            }
            String::from_utf8(got).unwrap()
        }
        assert_eq!(all(&path, LogOptions::default()).await, "one\ntwo\nthree\n");
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(all(&path, tail).await, "two\nthree\n");
        let since = LogOptions {
            since: Some(at("2026-11-26T09:30:00Z")),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            all(&path, since).await,
            "2026-11-26T10:00:00.000000001Z two\n2026-11-26T10:00:01.000000001Z three\n"
        );

        // following: a line appended later arrives; the stream ends once the container stops
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let r = running.clone();
        let follow = LogOptions {
            follow: true,
            tail_lines: Some(1),
            ..Default::default()
        };
        let mut rx = stream(
            &path,
            follow,
            Box::new(move || r.load(std::sync::atomic::Ordering::SeqCst)),
        )
        .await
        .unwrap();
        assert_eq!(&rx.recv().await.unwrap().unwrap()[..], b"three\n");
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"2026-11-26T10:00:02Z stdout F four\n")
            .unwrap();
        assert_eq!(&rx.recv().await.unwrap().unwrap()[..], b"four\n");
        // rotated (renamed, a new file in its place): the new file is read from its start
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&path, "2026-11-26T10:00:03Z stdout F five\n").unwrap();
        assert_eq!(&rx.recv().await.unwrap().unwrap()[..], b"five\n");
        running.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(rx.recv().await.is_none(), "ends when the container stopped");
    }
}
