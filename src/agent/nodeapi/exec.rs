//! `exec` and `attach` (`/exec/NS/POD/CONTAINER?command=..&stdin=1&stdout=1&stderr=1&tty=1`,
//! `/attach/...`): the kubelet's remote command streams, over WebSocket (`v5.channel.k8s.io` and
//! `v4.channel.k8s.io`, what kubectl 1.30+ and the Python client speak) or over SPDY/3.1
//! (`v4.channel.k8s.io`, kubectl 1.27-1.29: one stream per channel, named by its `streamType`,
//! see `spdy`).
//!
//! Every WebSocket message is one channel's: its first byte is the channel (0 stdin, 1 stdout,
//! 2 stderr, 3 the status at the end, 4 terminal resizes `{"Width":W,"Height":H}`), the rest its
//! data; v5 adds the client's "stdin is closed" (255 then the channel). As the kubelet does, the
//! first message is an empty one on the lowest output channel, and the last one the status: a
//! `Status` of `Success`, or of `Failure` with reason `NonZeroExitCode` and the code as the
//! cause `ExitCode`, which kubectl turns into "command terminated with exit code N" and its own
//! exit code.
//!
//! The process runs through containerd's Tasks.Exec (`Runtime::exec_start`) with the
//! container's environment, user and working directory; the client going away kills it. A
//! command that cannot start ends with 127 (not found) or 126 (not executable), its reason on
//! stderr. `attach` shows the container's output from now on (the log the log driver writes) until
//! the container ends, and with `stdin=1` writes the client's input into the container's stdin
//! FIFO (`Runtime::attach_stdin`: a container with `stdin: true`; input to one without is
//! dropped, as the kubelet does); a `tty` container's terminal takes the resizes. The client's
//! stdin ending, or the client going away, ends its input only, except with `stdinOnce`: then the
//! container's stdin is closed for good. Several attaches may run at once.
use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{status, Body, NodeApi};
use crate::runtime::{ExecControl, ExecRequest, ExecSession};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: the client closed a stream (the next byte names it).
pub const CLOSE: u8 = 255;

/// The remote command subprotocols, the preferred first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// Output chunks read at once.
const CHUNK: usize = 32 * 1024;
/// How long a terminal's start waits for the client's first size.
const FIRST_SIZE: std::time::Duration = std::time::Duration::from_secs(2);
/// Output messages queued for a slow client before the reads wait.
const QUEUED: usize = 4;

/// What a remote command request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true" | "True" | "TRUE")
}

impl Options {
    /// The kubelet's query: `command` repeated, `stdin`, `stdout`, `stderr`, `tty` (`1` or
    /// `true`; kube-apiserver's `input`/`output`/`error` spellings too).
    pub fn from_query(query: Option<&str>) -> Options {
        let mut o = Options::default();
        for (k, v) in url_pairs(query.unwrap_or("")) {
            match k.as_str() {
                "command" => o.command.push(v),
                "stdin" | "input" => o.stdin = truthy(&v),
                "stdout" | "output" => o.stdout = truthy(&v),
                "stderr" | "error" => o.stderr = truthy(&v),
                "tty" => o.tty = truthy(&v),
                _ => {}
            }
        }
        // under a terminal stderr is the terminal's
        if o.tty {
            o.stderr = false;
        }
        o
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// The status message that ends a session.
pub fn exit_status(exit: Result<u32, String>) -> Value {
    match exit {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => json!({
            "metadata": {}, "status": "Failure", "message": message,
            "reason": "InternalError", "code": 500,
        }),
    }
}

/// The exit code of a command that could not start, from the runtime's reason (runc's "exec:
/// \"x\": executable file not found in $PATH", "no such file or directory", "permission
/// denied").
pub fn start_failure_code(reason: &str) -> u32 {
    if reason.contains("not found") || reason.contains("no such file") {
        127
    } else {
        126
    }
}

/// What the client sends.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Stdin(Bytes),
    StdinClosed,
    Resize { width: u32, height: u32 },
}

/// A client message as its input: None for what is ignored.
pub fn input(v5: bool, data: &[u8]) -> Option<Input> {
    let (&channel, rest) = data.split_first()?;
    match channel {
        STDIN => Some(Input::Stdin(Bytes::copy_from_slice(rest))),
        RESIZE => {
            let size: Value = serde_json::from_slice(rest).ok()?;
            let dim = |k| {
                size.get(k)
                    .and_then(Value::as_u64)
                    .and_then(|v| u32::try_from(v).ok())
            };
            Some(Input::Resize {
                width: dim("Width")?,
                height: dim("Height")?,
            })
        }
        CLOSE if v5 && rest.first() == Some(&STDIN) => Some(Input::StdinClosed),
        _ => None,
    }
}

/// One channel's message (a remote command's or a WebSocket port forward's).
pub(super) fn frame(channel: u8, data: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    v.into()
}

/// The close that ends a session well: client-go reads the error channel to its end, and any
/// other close is an error to it.
pub(super) fn normal_closure() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }
}

/// The container id of `container` of pod `ns/pod` on this node, when it runs.
fn running_container(
    api: &NodeApi,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<String, Box<Response<Body>>> {
    let reported = api
        .pods
        .lock()
        .map_err(|_| {
            Box::new(status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "the pod view is poisoned",
            ))
        })?
        .iter()
        .find(|(k, _)| k.namespace == ns && k.name == pod)
        .map(|(_, v)| v.status.clone())
        .ok_or_else(|| {
            Box::new(status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("pod {ns}/{pod} is not on this node"),
            ))
        })?;
    let c = reported
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.name == container)
        .ok_or_else(|| {
            Box::new(status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("container {container} is not valid for pod {pod}"),
            ))
        })?;
    let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
    match c.container_id.filter(|_| running) {
        Some(id) => Ok(id.trim_start_matches("containerd://").to_string()),
        None => Err(Box::new(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("container {container} is not running in pod {ns}/{pod}"),
        ))),
    }
}

/// `/exec/NS/POD/CONTAINER` and `/attach/NS/POD/CONTAINER`: the upgrade answered, the session
/// run on the upgraded connection.
pub async fn serve(
    api: &NodeApi,
    req: Request<Incoming>,
    attach: bool,
    ns: &str,
    pod: &str,
    container: &str,
) -> Response<Body> {
    let transport = match transport(&req) {
        Ok(t) => t,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    let opts = Options::from_query(req.uri().query());
    if !attach && opts.command.is_empty() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least 1 command",
        );
    }
    if !(opts.stdin || opts.stdout || opts.stderr) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least one of stdin, stdout, stderr",
        );
    }
    let id = match running_container(api, ns, pod, container) {
        Ok(id) => id,
        Err(resp) => return *resp,
    };
    let work = Work {
        runtime: api.runtime.clone(),
        id,
        opts,
        v5: matches!(transport, Transport::WebSocket { protocol, .. } if protocol.starts_with("v5")),
        activity: super::idle::Activity::new(api.idle_timeout),
        attach: attach.then(|| Attached {
            state_dir: api.state_dir.clone(),
            pods: api.pods.clone(),
            ns: ns.to_string(),
            pod: pod.to_string(),
            container: container.to_string(),
        }),
    };
    let resp = transport.switching();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => match transport {
                Transport::WebSocket { .. } => work.over_websocket(TokioIo::new(upgraded)).await,
                Transport::Spdy { .. } => work.over_spdy(TokioIo::new(upgraded)).await,
            },
            Err(e) => tracing::debug!(error = %e, "remote command: the upgrade failed"),
        }
    });
    resp
}

/// How a stream session travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// With the subprotocol chosen and the client's key.
    WebSocket { protocol: &'static str, key: String },
    /// SPDY/3.1 with the stream protocol chosen.
    Spdy { protocol: &'static str },
}

/// The stream protocols spoken over SPDY.
pub const SPDY_PROTOCOLS: &[&str] = &["v4.channel.k8s.io"];

/// The transport a request asks to upgrade to, or why it cannot be had.
pub fn transport<B>(req: &Request<B>) -> Result<Transport, String> {
    transport_of(req, PROTOCOLS, SPDY_PROTOCOLS)
}

/// The transport among what `req` offers: WebSocket with one of `ws` as its subprotocol, or
/// SPDY with one of `spdy` as `X-Stream-Protocol-Version`.
pub fn transport_of<B>(
    req: &Request<B>,
    ws: &[&'static str],
    spdy: &[&'static str],
) -> Result<Transport, String> {
    let joined = |h: &str| {
        req.headers()
            .get_all(h)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    };
    let offered =
        |h: &str| -> Vec<String> { joined(h).split(',').map(|p| p.trim().to_string()).collect() };
    let upgrade = joined("upgrade").to_ascii_lowercase();
    if upgrade == "websocket" {
        let offered = offered("sec-websocket-protocol");
        let protocol = ws
            .iter()
            .copied()
            .find(|p| offered.iter().any(|o| o == p))
            .ok_or_else(|| format!("no supported subprotocol: offer one of {ws:?}"))?;
        let key = joined("sec-websocket-key");
        if key.is_empty() {
            return Err("no Sec-WebSocket-Key".into());
        }
        return Ok(Transport::WebSocket { protocol, key });
    }
    if upgrade == "spdy/3.1" {
        let offered = offered("x-stream-protocol-version");
        let protocol = spdy
            .iter()
            .copied()
            .find(|p| offered.iter().any(|o| o == p))
            .ok_or_else(|| format!("no supported stream protocol: offer one of {spdy:?}"))?;
        return Ok(Transport::Spdy { protocol });
    }
    Err("streams need an upgrade to a WebSocket or to SPDY/3.1".into())
}

impl Transport {
    /// The 101 that switches to it.
    pub fn switching(&self) -> Response<Body> {
        let mut resp = Response::new(super::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        match self {
            Transport::WebSocket { protocol, key } => {
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                h.insert(
                    header::SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(protocol),
                );
                let accept =
                    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
                if let Ok(v) = HeaderValue::from_str(&accept) {
                    h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
                }
            }
            Transport::Spdy { protocol } => {
                h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
                h.insert(
                    "x-stream-protocol-version",
                    HeaderValue::from_static(protocol),
                );
            }
        }
        resp
    }
}

/// The container whose output an attach follows.
struct Attached {
    state_dir: std::path::PathBuf,
    pods: crate::agent::localapi::PodsView,
    ns: String,
    pod: String,
    container: String,
}

/// One session's work, moved onto the upgraded connection.
struct Work {
    runtime: Arc<dyn crate::runtime::Runtime>,
    id: String,
    opts: Options,
    v5: bool,
    attach: Option<Attached>,
    /// The data of the session, for its idle timeout.
    activity: super::idle::Activity,
}

type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// The lowest output channel of `opts`: the kubelet's "ready" is an empty message on it.
fn first_channel(opts: &Options) -> u8 {
    match (opts.stdout || opts.tty, opts.stderr) {
        (true, _) => STDOUT,
        (false, true) => STDERR,
        _ => ERROR,
    }
}

impl Work {
    /// The session over a WebSocket: one message per channel's chunk.
    async fn over_websocket(self, io: Upgraded) {
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (mut sink, mut incoming) = ws.split();
        let (out, mut queued) = mpsc::channel::<(u8, Bytes)>(QUEUED);
        let activity = self.activity.clone();
        let writer = tokio::spawn(async move {
            while let Some((channel, data)) = queued.recv().await {
                activity.seen();
                if sink
                    .send(Message::Binary(frame(channel, &data)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = sink.send(Message::Close(Some(normal_closure()))).await;
            let _ = sink.close().await;
        });
        let _ = out.send((first_channel(&self.opts), Bytes::new())).await;
        let (inputs_tx, inputs) = mpsc::channel::<Input>(QUEUED);
        let v5 = self.v5;
        let activity = self.activity.clone();
        // the client's messages; the channel closes when it goes away or the session idles
        let reader = tokio::spawn(async move {
            let expired = activity.expired();
            tokio::pin!(expired);
            loop {
                let m = tokio::select! {
                    m = incoming.next() => m,
                    _ = &mut expired => return,
                };
                let Some(Ok(m)) = m else { return };
                let data = match m {
                    Message::Binary(b) => {
                        activity.seen();
                        b
                    }
                    // the Python client writes str data (stdin, resizes) as text messages; the
                    // kubelet's channel protocol reads both kinds
                    Message::Text(t) => {
                        activity.seen();
                        Bytes::from(t)
                    }
                    Message::Close(_) => return,
                    _ => continue,
                };
                if let Some(i) = input(v5, &data) {
                    if inputs_tx.send(i).await.is_err() {
                        return;
                    }
                }
            }
        });
        if let Some(exit) = self.session(&out, inputs).await {
            let _ = out
                .send((ERROR, exit_status(exit).to_string().into()))
                .await;
        }
        drop(out);
        let _ = writer.await;
        reader.abort();
    }

    /// The session over SPDY: one stream per channel, the client's, told by its `streamType`.
    async fn over_spdy(self, io: Upgraded) {
        let mut wanted = vec![("error", ERROR)];
        if self.opts.stdin {
            wanted.push(("stdin", STDIN));
        }
        if self.opts.stdout || self.opts.tty {
            wanted.push(("stdout", STDOUT));
        }
        if self.opts.stderr {
            wanted.push(("stderr", STDERR));
        }
        if self.opts.tty {
            wanted.push(("resize", RESIZE));
        }
        let Some(conn) = super::spdy::accept(io, &wanted).await else {
            return;
        };
        let super::spdy::Accepted {
            streams,
            frames,
            mut data,
            writer,
            reader,
        } = conn;
        let (out, mut queued) = mpsc::channel::<(u8, Bytes)>(QUEUED);
        let stream_of = |ch: u8| streams.iter().find(|(c, _)| *c == ch).map(|(_, s)| *s);
        let ids: Vec<(u8, u32)> = streams.clone();
        let forward_frames = frames.clone();
        let activity = self.activity.clone();
        let forward = tokio::spawn(async move {
            while let Some((channel, bytes)) = queued.recv().await {
                activity.seen();
                let Some(stream) = ids.iter().find(|(c, _)| *c == channel).map(|(_, s)| *s) else {
                    continue;
                };
                let f = super::spdy::Frame::Data {
                    stream,
                    fin: false,
                    data: bytes,
                };
                if forward_frames.send(f).await.is_err() {
                    return;
                }
            }
        });
        let (inputs_tx, inputs) = mpsc::channel::<Input>(QUEUED);
        let (stdin, resize) = (stream_of(STDIN), stream_of(RESIZE));
        let activity = self.activity.clone();
        // the client's data; the inputs close when it goes away or the session idles
        let translate = tokio::spawn(async move {
            let mut sizes = Vec::new();
            let expired = activity.expired();
            tokio::pin!(expired);
            loop {
                let got = tokio::select! {
                    got = data.recv() => got,
                    _ = &mut expired => return,
                };
                let Some((stream, bytes, fin)) = got else {
                    return;
                };
                activity.seen();
                let mut inputs = vec![];
                if Some(stream) == stdin {
                    if !bytes.is_empty() {
                        inputs.push(Input::Stdin(bytes));
                    }
                    if fin {
                        inputs.push(Input::StdinClosed);
                    }
                } else if Some(stream) == resize {
                    sizes.extend_from_slice(&bytes);
                    inputs.extend(resizes(&mut sizes));
                }
                for i in inputs {
                    if inputs_tx.send(i).await.is_err() {
                        return;
                    }
                }
            }
        });
        let exit = self.session(&out, inputs).await;
        drop(out);
        let _ = forward.await;
        if let Some(exit) = exit {
            if let Some(stream) = stream_of(ERROR) {
                let status = exit_status(exit).to_string();
                let _ = frames
                    .send(super::spdy::Frame::Data {
                        stream,
                        fin: false,
                        data: status.into(),
                    })
                    .await;
            }
        }
        super::spdy::finish(&frames, &streams).await;
        drop(frames);
        let _ = writer.await;
        reader.abort();
        translate.abort();
    }

    /// Runs the exec or the attach, its output on `out`, the client's input from `inputs`:
    /// how it ended (None when the client went away first).
    async fn session(
        &self,
        out: &mpsc::Sender<(u8, Bytes)>,
        inputs: mpsc::Receiver<Input>,
    ) -> Option<Result<u32, String>> {
        match &self.attach {
            Some(a) => self.attach(a, out, inputs).await,
            None => self.exec(out, inputs).await,
        }
    }

    /// Runs the command: its exit (None when the client went away first).
    async fn exec(
        &self,
        out: &mpsc::Sender<(u8, Bytes)>,
        mut inputs: mpsc::Receiver<Input>,
    ) -> Option<Result<u32, String>> {
        // a terminal's client tells its size first: the process starts with it
        let mut early = None;
        let mut size = None;
        if self.opts.tty {
            match tokio::time::timeout(FIRST_SIZE, inputs.recv()).await {
                Ok(Some(Input::Resize { width, height })) => size = Some((width, height)),
                Ok(Some(other)) => early = Some(other),
                Ok(None) => return None,
                Err(_) => {}
            }
        }
        let req = ExecRequest {
            cmd: self.opts.command.clone(),
            stdin: self.opts.stdin,
            stdout: self.opts.stdout,
            stderr: self.opts.stderr,
            tty: self.opts.tty,
            size,
        };
        let ExecSession {
            stdin,
            stdout,
            stderr,
            control,
        } = match self.runtime.exec_start(&self.id, &req).await {
            Ok(s) => s,
            Err(e) => {
                let reason = crate::runtime::chain(&e);
                let channel = if self.opts.tty { STDOUT } else { STDERR };
                let _ = out.send((channel, format!("{reason}\r\n").into())).await;
                return Some(Ok(start_failure_code(&reason)));
            }
        };
        let (done_tx, done) = tokio::sync::watch::channel(false);
        let pumps: Vec<_> = [(STDOUT, stdout), (STDERR, stderr)]
            .into_iter()
            .filter_map(|(ch, r)| r.map(|r| tokio::spawn(pump(r, ch, out.clone(), done.clone()))))
            .collect();
        let mut stdin = stdin;
        if let Some(i) = early {
            handle_input(i, &mut stdin, &*control).await;
        }
        let exit = {
            let wait = control.wait();
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    exit = &mut wait => break Some(exit),
                    i = inputs.recv() => match i {
                        Some(i) => handle_input(i, &mut stdin, &*control).await,
                        None => break None,
                    },
                }
            }
        };
        let Some(exit) = exit else {
            // the client went away: the process goes too
            control.end().await;
            let _ = done_tx.send(true);
            for p in pumps {
                p.abort();
            }
            return None;
        };
        let _ = done_tx.send(true);
        for p in pumps {
            let _ = p.await;
        }
        Some(exit.map_err(|e| crate::runtime::chain(&e)))
    }
}

async fn handle_input(
    i: Input,
    stdin: &mut Option<tokio::net::unix::pipe::Sender>,
    control: &dyn ExecControl,
) {
    match i {
        Input::Stdin(data) => {
            if let Some(s) = stdin {
                if s.write_all(&data).await.is_err() {
                    *stdin = None;
                }
            }
        }
        Input::StdinClosed => {
            if stdin.take().is_some() {
                if let Err(e) = control.close_stdin().await {
                    tracing::debug!(error = %crate::runtime::chain(&e), "close exec stdin");
                }
            }
        }
        Input::Resize { width, height } => {
            if let Err(e) = control.resize(width, height).await {
                tracing::debug!(error = %crate::runtime::chain(&e), "resize exec terminal");
            }
        }
    }
}

/// Copies `r` to `channel` until `done` (the process was deleted: all its output is in the
/// pipe), then what is left.
async fn pump(
    r: tokio::net::unix::pipe::Receiver,
    channel: u8,
    out: mpsc::Sender<(u8, Bytes)>,
    mut done: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut finishing = false;
    loop {
        if !finishing {
            tokio::select! {
                ready = r.readable() => if ready.is_err() { return },
                _ = done.wait_for(|d| *d) => finishing = true,
            }
        }
        match r.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if out
                    .send((channel, Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if finishing {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

impl Work {
    /// Sends the container's output from now on until it ends or the client goes away, and the
    /// client's input into its stdin: the container's end is the session's (Success).
    async fn attach(
        &self,
        a: &Attached,
        out: &mpsc::Sender<(u8, Bytes)>,
        inputs: mpsc::Receiver<Input>,
    ) -> Option<Result<u32, String>> {
        let stdin = match self.opts.stdin {
        true => self.runtime.attach_stdin(&self.id).await.unwrap_or_else(|e| {
            tracing::debug!(error = %crate::runtime::chain(&e), "attach: open the container's stdin");
            None
        }),
        false => None,
    };
        let once = stdin.as_ref().is_some_and(|s| s.once);
        let ended = self
            .attach_streams(a, out, inputs, stdin.map(|s| s.stdin), once)
            .await;
        if once {
            if let Err(e) = self.runtime.close_stdin(&self.id).await {
                tracing::debug!(error = %crate::runtime::chain(&e), "attach: close stdinOnce stdin");
            }
        }
        ended
    }

    async fn attach_streams(
        &self,
        a: &Attached,
        out: &mpsc::Sender<(u8, Bytes)>,
        mut inputs: mpsc::Receiver<Input>,
        mut stdin: Option<tokio::net::unix::pipe::Sender>,
        once: bool,
    ) -> Option<Result<u32, String>> {
        use super::logs;
        let (path, running) =
            match logs::locate(&a.state_dir, &a.pods, &a.ns, &a.pod, &a.container, false) {
                Ok(x) => x,
                Err(e) => return Some(Err(crate::runtime::chain(&e))),
            };
        let (state_dir, pods) = (a.state_dir.clone(), a.pods.clone());
        let (ns, pod, container) = (a.ns.clone(), a.pod.clone(), a.container.clone());
        let first = path.clone();
        let still_running: logs::StillRunning = Box::new(move || {
            running
                && logs::locate(&state_dir, &pods, &ns, &pod, &container, false)
                    .is_ok_and(|(p, r)| r && p == first)
        });
        // the output from now on, known to start before any input of this attach is written:
        // the echo of its first line is its own to see
        let mut rx = match logs::follow_from_now(&path, still_running).await {
            Ok(rx) => rx,
            Err(e) => return Some(Err(crate::runtime::chain(&e))),
        };
        loop {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(Ok(data)) => {
                        if out.send((STDOUT, data)).await.is_err() {
                            return None;
                        }
                    }
                    Some(Err(e)) => return Some(Err(crate::runtime::chain(&e))),
                    None => return Some(Ok(0)),
                },
                i = inputs.recv() => match i? {
                    Input::Stdin(data) => {
                        if let Some(s) = &mut stdin {
                            if s.write_all(&data).await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    // with stdinOnce the end of the client's input is the container's (as
                    // containerd's CRI: kubectl does not end the attach by itself)
                    Input::StdinClosed => {
                        if stdin.take().is_some() && once {
                            if let Err(e) = self.runtime.close_stdin(&self.id).await {
                                tracing::debug!(error = %crate::runtime::chain(&e), "attach: close stdin");
                            }
                        }
                    }
                    Input::Resize { width, height } => {
                        if self.opts.tty {
                            if let Err(e) = self.runtime.resize_terminal(&self.id, width, height).await {
                                tracing::debug!(error = %crate::runtime::chain(&e), "attach: resize");
                            }
                        }
                    }
                },
            }
        }
    }
}

/// The whole resize objects at the front of `buf` (SPDY's resize stream carries one JSON
/// object after the other), taken off it.
pub fn resizes(buf: &mut Vec<u8>) -> Vec<Input> {
    let mut found = vec![];
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    let mut used = 0;
    while let Some(Ok(v)) = it.next() {
        used = it.byte_offset();
        let dim = |k| {
            v.get(k)
                .and_then(Value::as_u64)
                .and_then(|d| u32::try_from(d).ok())
        };
        if let (Some(width), Some(height)) = (dim("Width"), dim("Height")) {
            found.push(Input::Resize { width, height });
        }
    }
    buf.drain(..used);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_the_command_and_streams() {
        let o = Options::from_query(Some(
            "command=sh&command=-c&command=echo+hi%3B+exit+3&stdin=true&stdout=1&stderr=true&tty=false",
        ));
        assert_eq!(o.command, ["sh", "-c", "echo hi; exit 3"]);
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        // a terminal takes stderr
        let t = Options::from_query(Some("command=sh&stdin=1&stdout=1&stderr=1&tty=1"));
        assert!(t.tty && !t.stderr);
        assert_eq!(Options::from_query(None), Options::default());
    }

    #[test]
    fn the_transport_is_a_websocket_v5_before_v4_or_spdy() {
        let req = |headers: &[(&str, &str)]| {
            let mut r = Request::new(());
            for (k, v) in headers {
                r.headers_mut().append(
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            r
        };
        let ws = req(&[
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
            (
                "sec-websocket-protocol",
                "v4.channel.k8s.io, v5.channel.k8s.io",
            ),
        ]);
        assert_eq!(
            transport(&ws),
            Ok(Transport::WebSocket {
                protocol: "v5.channel.k8s.io",
                key: "k".into()
            })
        );
        let python = req(&[
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
            ("sec-websocket-protocol", "channel.k8s.io,v4.channel.k8s.io"),
        ]);
        assert!(matches!(
            transport(&python),
            Ok(Transport::WebSocket {
                protocol: "v4.channel.k8s.io",
                ..
            })
        ));
        let base64 = req(&[
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
            ("sec-websocket-protocol", "base64.channel.k8s.io"),
        ]);
        assert!(transport(&base64).is_err());
        // kubectl 1.27: one X-Stream-Protocol-Version header per version it speaks
        let spdy = req(&[
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
            ("x-stream-protocol-version", "v3.channel.k8s.io"),
        ]);
        assert_eq!(
            transport(&spdy),
            Ok(Transport::Spdy {
                protocol: "v4.channel.k8s.io"
            })
        );
        assert!(transport(&req(&[])).is_err());
    }

    #[test]
    fn spdy_resizes_are_one_json_object_after_the_other() {
        let mut buf = b"{\"Width\":80,\"Height\":24}\n{\"Width\":100,\"Hei".to_vec();
        assert_eq!(
            resizes(&mut buf),
            [Input::Resize {
                width: 80,
                height: 24
            }]
        );
        buf.extend_from_slice(b"ght\":30}\n");
        assert_eq!(
            resizes(&mut buf),
            [Input::Resize {
                width: 100,
                height: 30
            }]
        );
        assert!(buf.iter().all(u8::is_ascii_whitespace));
    }

    #[test]
    fn the_status_carries_the_exit_code_as_kubectl_reads_it() {
        assert_eq!(exit_status(Ok(0))["status"], "Success");
        let s = exit_status(Ok(3));
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(
            s["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        let e = exit_status(Err("boom".into()));
        assert_eq!(
            (e["status"].as_str(), e["message"].as_str()),
            (Some("Failure"), Some("boom"))
        );
    }

    #[test]
    fn a_command_that_cannot_start_is_127_or_126() {
        let not_found = "OCI runtime exec failed: exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH: unknown";
        assert_eq!(start_failure_code(not_found), 127);
        assert_eq!(
            start_failure_code("exec: \"/x\": stat /x: no such file or directory"),
            127
        );
        assert_eq!(
            start_failure_code("exec: \"/etc/passwd\": permission denied"),
            126
        );
    }

    #[test]
    fn client_messages_are_stdin_resizes_and_v5_closes() {
        assert_eq!(
            input(true, b"\x00ab"),
            Some(Input::Stdin(Bytes::from_static(b"ab")))
        );
        assert_eq!(
            input(false, b"\x04{\"Width\":80,\"Height\":24}"),
            Some(Input::Resize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(input(true, &[CLOSE, STDIN]), Some(Input::StdinClosed));
        // v4 has no close signal; unknown channels and empty messages are ignored
        assert_eq!(input(false, &[CLOSE, STDIN]), None);
        assert_eq!(input(true, &[STDOUT, b'x']), None);
        assert_eq!(input(true, &[]), None);
        assert_eq!(input(true, b"\x04{\"Width\":-1}"), None);
    }
}
