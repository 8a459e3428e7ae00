//! Connections: who may open one (a cap per client address and in total), how long a client may
//! take to send a request's headers and body, and how long an idle connection stays open.
//!
//! [`serve`] serves HTTP/1.1 and h2c on any `AsyncRead + AsyncWrite` stream: the accept loop
//! hands it a TCP stream today; a TLS layer hands it the stream it wraps around one.
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use hyper::body::{Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::audit::{Client, Line};
use super::body::{self, BodyTimeout};
use super::router;
use super::status::ApiError;
use super::verbs::Api;

/// What one client, and all of them together, may hold of the server. The defaults follow
/// kube-apiserver's HTTP server (32 s to send headers, 90 s idle); each can be changed with a
/// `DSA_SERVER_*` environment variable (seconds, or a count) named below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A request's headers must arrive within this (`DSA_SERVER_HEADER_TIMEOUT`); for HTTP/1.1
    /// also the longest wait for the next request on a kept-alive connection.
    pub header_timeout: Duration,
    /// A request's body must arrive within this (`DSA_SERVER_BODY_TIMEOUT`).
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed (`DSA_SERVER_IDLE_TIMEOUT`).
    pub idle_timeout: Duration,
    /// Open connections from one client address (`DSA_SERVER_MAX_CONNECTIONS_PER_CLIENT`).
    pub max_connections_per_client: usize,
    /// Open connections in all (`DSA_SERVER_MAX_CONNECTIONS`).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(32),
            body_timeout: body::BODY_READ_TIMEOUT,
            idle_timeout: Duration::from_secs(90),
            max_connections_per_client: 1024,
            max_connections: 16384,
        }
    }
}

impl Limits {
    /// The defaults, with what the `DSA_SERVER_*` environment variables set (a value that does
    /// not parse is ignored with a warning).
    pub fn from_env() -> Limits {
        Limits::from_vars(|k| std::env::var(k).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Limits {
        let mut l = Limits::default();
        let get = |key: &str| -> Option<u64> {
            let v = var(key)?;
            match v.trim().parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    tracing::warn!(key, value = v.as_str(), "ignored: not a whole number");
                    None
                }
            }
        };
        let secs = |key: &str, d: &mut Duration| {
            if let Some(n) = get(key).filter(|n| *n > 0) {
                *d = Duration::from_secs(n);
            }
        };
        secs("DSA_SERVER_HEADER_TIMEOUT", &mut l.header_timeout);
        secs("DSA_SERVER_BODY_TIMEOUT", &mut l.body_timeout);
        secs("DSA_SERVER_IDLE_TIMEOUT", &mut l.idle_timeout);
        let count = |key: &str, n: &mut usize| {
            if let Some(v) = get(key).filter(|v| *v > 0) {
                *n = usize::try_from(v).unwrap_or(usize::MAX);
            }
        };
        count(
            "DSA_SERVER_MAX_CONNECTIONS_PER_CLIENT",
            &mut l.max_connections_per_client,
        );
        count("DSA_SERVER_MAX_CONNECTIONS", &mut l.max_connections);
        l
    }

    /// The total cap kept under the open files limit, with room for the store and logs.
    pub fn capped_by_open_files(mut self) -> Limits {
        use nix::sys::resource::{getrlimit, Resource};
        if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let room = usize::try_from(soft.saturating_sub(64)).unwrap_or(usize::MAX);
            self.max_connections = self.max_connections.min(room.max(1));
        }
        self
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    PerClient(usize),
    Total(usize),
}

impl Refusal {
    fn message(&self) -> String {
        match self {
            Refusal::PerClient(n) => {
                format!("too many connections from this client address (limit {n})")
            }
            Refusal::Total(n) => format!("too many connections to the server (limit {n})"),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// The open connections, counted per client address and in all.
#[derive(Debug, Clone)]
pub struct Connections {
    counts: Arc<Mutex<Counts>>,
    per_client: usize,
    total: usize,
}

/// An admitted connection's place in the counts, given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_client.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_client.remove(&self.ip);
            }
        }
    }
}

impl Connections {
    pub fn new(limits: &Limits) -> Connections {
        Connections {
            counts: Arc::default(),
            per_client: limits.max_connections_per_client,
            total: limits.max_connections,
        }
    }

    /// A place for a new connection from `ip`, or why there is none.
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.total {
            return Err(Refusal::Total(self.total));
        }
        let n = c.per_client.entry(ip).or_insert(0);
        if *n >= self.per_client {
            return Err(Refusal::PerClient(self.per_client));
        }
        *n += 1;
        c.total += 1;
        Ok(Admitted {
            counts: self.counts.clone(),
            ip,
        })
    }
}

/// Answers a connection over its cap with a 429 `Status` (as kube-apiserver's max-in-flight
/// filter does), written only if the socket takes it at once, and closes it.
pub fn refuse(stream: &TcpStream, client: &Client, refusal: &Refusal) {
    let message = refusal.message();
    let status = ApiError::new(429, "TooManyRequests", message.clone()).to_status();
    let body = serde_json::to_vec(&status).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = stream.try_write(&[head.as_bytes(), &body].concat());
    client.log.record(Line::Refused {
        client: client.addr,
        user: "-".into(),
        verb: "-",
        path: "-".into(),
        status: 429,
        reason: message,
    });
}

/// Requests in flight on a connection (a response counts until its body is sent), and how many
/// were started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Activity {
    in_flight: usize,
    started: u64,
}

/// Counts a request as in flight while it lives.
struct InFlight(watch::Sender<Activity>);

impl InFlight {
    fn start(tx: &watch::Sender<Activity>) -> InFlight {
        tx.send_modify(|a| {
            a.in_flight += 1;
            a.started += 1;
        });
        InFlight(tx.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| a.in_flight -= 1);
    }
}

/// A response body that keeps its request in flight until it is sent or dropped (a watch lives
/// in its body).
struct Tracked {
    inner: body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body at least this big makes a heavy request (decoding and validating it takes a
/// worker for a while).
const HEAVY_BODY: usize = 256 * 1024;

/// Heavy requests are served one at a time, so they never hold both runtime workers.
static HEAVY_WRITES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// After an idle or slow connection is told to close, how long its last response may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long a closed connection keeps reading (and dropping) what its client still sends.
const LINGER: Duration = Duration::from_millis(500);

/// A connection's stream that, once the server is done with it, lingers before it closes.
///
/// When the server answers before it has read the whole request (413 for a body past the limit,
/// 408, 401 before the body) the client may still be sending. Closing the socket then makes the
/// kernel answer the client's next segment with a reset, and a reset throws away the response
/// the client has not read yet: it sees a broken connection instead of the Status. So, as Go's
/// net/http (`closeWriteAndWait`) and nginx's `lingering_close` do, the write side is shut down
/// (hyper does that when it ends the connection) and what still arrives is read and dropped for
/// at most [`LINGER`] before the socket closes. The client's admission is held until then, so
/// lingering sockets count against the connection limits.
struct Linger<IO: AsyncRead + Unpin + Send + 'static> {
    io: Option<IO>,
    admitted: Option<Admitted>,
}

impl<IO: AsyncRead + Unpin + Send + 'static> Linger<IO> {
    fn io(&mut self) -> Pin<&mut IO> {
        Pin::new(self.io.as_mut().expect("the stream is only taken on drop"))
    }
}

impl<IO: AsyncRead + Unpin + Send + 'static> Drop for Linger<IO> {
    fn drop(&mut self) {
        let (Some(mut io), admitted) = (self.io.take(), self.admitted.take()) else {
            return;
        };
        // no runtime (shutting down): the socket just closes
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _admitted = admitted;
            let mut buf = vec![0u8; 16 * 1024];
            let _ = tokio::time::timeout(LINGER, async {
                while let Ok(1..) = io.read(&mut buf).await {}
            })
            .await;
        });
    }
}

impl<IO: AsyncRead + Unpin + Send + 'static> AsyncRead for Linger<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Linger<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

/// Serves HTTP/1.1 and h2c on `io` until the client closes, a limit closes the connection or
/// the task is aborted (server shutdown). `admitted` is given back when it ends.
pub async fn serve<IO>(
    io: IO,
    client: Client,
    api: Arc<Api>,
    limits: Limits,
    admitted: Admitted,
    peer: super::tls::Peer,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = Linger {
        io: Some(io),
        admitted: Some(admitted),
    };
    let (activity, mut changes) = watch::channel(Activity::default());
    let service = {
        let client = client.clone();
        let body_timeout = BodyTimeout(limits.body_timeout);
        service_fn(move |mut req| {
            let in_flight = InFlight::start(&activity);
            req.extensions_mut().insert(client.clone());
            req.extensions_mut().insert(body_timeout);
            // what the TLS handshake told (a client certificate) for authentication
            req.extensions_mut().insert(peer.clone());
            let api = api.clone();
            let heavy = req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                .is_some_and(|n| n >= HEAVY_BODY);
            async move {
                // one big write at a time: the other worker stays free for everyone else
                let _turn = match heavy {
                    true => HEAVY_WRITES.acquire().await.ok(),
                    false => None,
                };
                let resp: Response<body::Body> = router::handle(api, req).await;
                if heavy {
                    // its memory is free now: worth giving back (the release task trims)
                    body::note_big_body();
                }
                drop(_turn);
                let resp = resp.map(|inner| {
                    http_body_util::BodyExt::boxed(Tracked {
                        inner,
                        _in_flight: in_flight,
                    })
                });
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout / 2)
        .keep_alive_timeout(limits.header_timeout);
    // (with upgrades: pods/exec, attach and portforward hand the connection to the node API)
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let ended = loop {
        let now = *changes.borrow_and_update();
        // before its first request a connection has the header timeout; after, the idle one
        let quiet_limit = if now.started == 0 {
            limits.header_timeout
        } else {
            limits.idle_timeout
        };
        tokio::select! {
            ended = conn.as_mut() => break ended.err().map(|e| e.to_string()),
            _ = changes.changed() => {}
            _ = tokio::time::sleep(quiet_limit), if now.in_flight == 0 => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
                let reason = if now.started == 0 {
                    format!("no request within {} seconds", quiet_limit.as_secs())
                } else {
                    format!("idle for {} seconds", quiet_limit.as_secs())
                };
                break Some(reason);
            }
        }
    };
    if let Some(reason) = ended {
        tracing::debug!(client = %client.addr, reason = reason.as_str(), "connection closed");
        client.log.record(Line::Refused {
            client: client.addr,
            user: "-".into(),
            verb: "-",
            path: "-".into(),
            status: 408,
            reason: super::audit::short_reason(&reason),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_per_client_and_in_total() {
        let limits = Limits {
            max_connections_per_client: 2,
            max_connections: 3,
            ..Limits::default()
        };
        let conns = Connections::new(&limits);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = conns.admit(a).unwrap();
        let _a2 = conns.admit(a).unwrap();
        assert_eq!(conns.admit(a).unwrap_err(), Refusal::PerClient(2));
        let _b1 = conns.admit(b).unwrap();
        assert_eq!(conns.admit(b).unwrap_err(), Refusal::Total(3));
        drop(a1);
        let _a3 = conns.admit(a).unwrap();
        assert!(conns.counts.lock().unwrap().per_client[&a] == 2);
    }

    /// The server's side of an in-memory connection that keeps each write call's bytes (a
    /// vectored write is one call, as `writev` on a socket).
    struct Recorder {
        io: tokio::io::DuplexStream,
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
            uncounted(|| self.writes.lock().unwrap().push(buf[..n].to_vec()));
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let all: Vec<u8> = uncounted(|| bufs.iter().flat_map(|b| b.iter().copied()).collect());
            self.poll_write(cx, &all)
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

    /// Reads `io` into `buf` until `want` is in it after `from`; returns where it ends.
    async fn read_until(
        io: &mut (dyn Io + '_),
        buf: &mut Vec<u8>,
        from: usize,
        want: &[u8],
    ) -> usize {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(p) = buf[from..].windows(want.len()).position(|w| w == want) {
                return from + p + want.len();
            }
            let mut tmp = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), io.read(&mut tmp))
                .await
                .expect("the watch went quiet")
                .unwrap();
            assert!(n > 0, "the connection closed");
            buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Counts the heap allocations made on a thread while it polls a [`Counted`] future: this
    /// test binary's allocator (the system's, counted), so a test can tell what the server's side
    /// of a connection allocates per watch event, apart from the client's side and the store.
    struct CountingAlloc;

    thread_local! {
        static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn note_allocation() {
        // (try_: a thread being torn down has no counters left, and is not counted)
        let _ = COUNTING.try_with(|on| {
            if on.get() {
                let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
            }
        });
    }

    // SAFETY: forwards to the system allocator; counting touches only const thread-locals
    // without destructors, which never allocate.
    unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
        unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
            note_allocation();
            // SAFETY: the caller's layout, passed on.
            unsafe { std::alloc::System.alloc(l) }
        }
        unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
            note_allocation();
            // SAFETY: as `alloc`.
            unsafe { std::alloc::System.alloc_zeroed(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
            // SAFETY: allocated by this allocator, with this layout.
            unsafe { std::alloc::System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
            note_allocation();
            // SAFETY: as `alloc` and `dealloc`.
            unsafe { std::alloc::System.realloc(p, l, new) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: CountingAlloc = CountingAlloc;

    /// A future whose polls count their allocations into [`ALLOCATIONS`].
    struct Counted<F>(Pin<Box<F>>);

    impl<F: std::future::Future> std::future::Future for Counted<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            COUNTING.with(|on| on.set(true));
            let out = self.0.as_mut().poll(cx);
            COUNTING.with(|on| on.set(false));
            out
        }
    }

    /// Runs `f` with this thread's counting off (the test's own bookkeeping).
    fn uncounted<T>(f: impl FnOnce() -> T) -> T {
        let was = COUNTING.with(|on| on.replace(false));
        let out = f();
        COUNTING.with(|on| on.set(was));
        out
    }

    fn allocations() -> u64 {
        ALLOCATIONS.with(|n| n.get())
    }

    /// What the server did for each of `EVENTS` watch events (after a first one).
    struct PerEvent {
        /// The write calls of each event.
        writes: Vec<Vec<Vec<u8>>>,
        /// The chunked body bytes of each event.
        chunks: Vec<usize>,
        /// The allocations the server's side of the connection made for each event (the
        /// store's, which every watcher shares, are not counted).
        allocations: Vec<u64>,
    }

    /// What the server wrote and allocated for each of `EVENTS` watch events (after a first
    /// one), over TLS or plain HTTP/1.1. On a current-thread runtime: every poll of the server's
    /// side is counted, and none of the client's.
    async fn writes_per_event(tls: bool) -> PerEvent {
        use tokio::io::AsyncWriteExt;
        const EVENTS: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::store::SqliteStore::open(&dir.path().join("s.db"), 100).unwrap();
        let api = Arc::new(Api::new(Arc::new(store), Default::default()));
        super::super::ensure_namespaces(&api).await.unwrap();
        let token = super::super::auth::tokens::ensure_admin(&api, None)
            .await
            .unwrap()
            .to_string();
        let (near, far) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            io: far,
            writes: writes.clone(),
        };
        let (log, _log_task) = super::super::audit::RequestLog::start();
        let client = Client {
            addr: "127.0.0.1:40000".parse().unwrap(),
            log,
        };
        let limits = Limits::default();
        let admitted = Connections::new(&limits).admit(client.addr.ip()).unwrap();
        let mut io: Box<dyn Io> = if tls {
            let server = super::super::tls::ServerTls::load_or_create(
                dir.path(),
                vec!["localhost".into()],
                chrono::Utc::now().timestamp(),
            )
            .unwrap();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(server.ca.cert_der.clone()).unwrap();
            let acceptor = server.acceptor().clone();
            let api = api.clone();
            tokio::spawn(Counted(Box::pin(async move {
                let io = acceptor.accept(recorder).await.unwrap();
                let io = super::super::tls::OneRecordWrites(io);
                serve(io, client, api, limits, admitted, Default::default()).await
            })));
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            Box::new(connector.connect(name, near).await.unwrap())
        } else {
            tokio::spawn(Counted(Box::pin(serve(
                recorder,
                client,
                api.clone(),
                limits,
                admitted,
                Default::default(),
            ))));
            Box::new(near)
        };
        let request = format!(
            "GET /api/v1/nodes?watch=1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        io.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut at = read_until(&mut *io, &mut buf, 0, b"\r\n\r\n").await;
        let head = String::from_utf8_lossy(&buf[..at]).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        let (mut per_event, mut chunks, mut allocs) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..=EVENTS {
            let before = writes.lock().unwrap().len();
            let allocs_before = allocations();
            let name = format!("n{i}");
            let node =
                serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
            api.store.create("nodes", "", &name, node).await.unwrap();
            // the whole chunk: its size line, the JSON line and the chunk's CRLF
            let start = at;
            let needle = format!("\"name\":\"{name}\"");
            let line_at = read_until(&mut *io, &mut buf, at, needle.as_bytes()).await;
            at = read_until(&mut *io, &mut buf, line_at, b"}\n\r\n").await;
            // the first event also carries what is left of the handshake (session tickets)
            if i > 0 {
                per_event.push(writes.lock().unwrap()[before..].to_vec());
                chunks.push(at - start);
                allocs.push(allocations() - allocs_before);
            }
        }
        PerEvent {
            writes: per_event,
            chunks,
            allocations: allocs,
        }
    }

    /// The TLS records in `wire` (each write's bytes): their content types and lengths.
    fn records(wire: &[u8]) -> Vec<(u8, usize)> {
        let mut out = Vec::new();
        let mut rest = wire;
        while rest.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            out.push((rest[0], len));
            rest = &rest[(5 + len).min(rest.len())..];
        }
        assert!(rest.is_empty(), "a partial record");
        out
    }

    #[tokio::test]
    async fn a_watch_event_is_one_write_and_one_tls_record() {
        let plain = writes_per_event(false).await;
        let chunks = plain.chunks;
        for (writes, chunk) in plain.writes.iter().zip(&chunks) {
            assert_eq!(writes.len(), 1, "one write per event over plain HTTP");
            assert_eq!(writes[0].len(), *chunk, "the chunk, whole");
        }
        let tls = writes_per_event(true).await;
        assert_eq!(tls.chunks, chunks, "the same chunked body either way");
        for (writes, chunk) in tls.writes.iter().zip(&chunks) {
            assert_eq!(writes.len(), 1, "one write per event over TLS");
            let records = records(&writes[0]);
            // TLS 1.3 application data: the chunk, its content type byte and a 16-byte tag
            assert_eq!(records, [(0x17, chunk + 17)], "one record per event");
        }
        eprintln!(
            "allocations per event per watcher: plain {:?}, TLS {:?}",
            plain.allocations, tls.allocations
        );
        // TLS costs one allocation more per event, the record's buffer (rustls seals each record
        // into a new one); not also a `Vec` of the write's slices (see tls::OneRecordWrites).
        // The median event: now and then a buffer grows (an allocation more, either way).
        let median = |v: &[u64]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v[v.len() / 2]
        };
        assert_eq!(
            median(&tls.allocations),
            median(&plain.allocations) + 1,
            "one allocation more per event over TLS: plain {:?}, TLS {:?}",
            plain.allocations,
            tls.allocations
        );
    }

    #[test]
    fn limits_from_the_environment() {
        let vars: HashMap<&str, &str> = [
            ("DSA_SERVER_HEADER_TIMEOUT", "2"),
            ("DSA_SERVER_MAX_CONNECTIONS_PER_CLIENT", "8"),
            ("DSA_SERVER_IDLE_TIMEOUT", "soon"),
            ("DSA_SERVER_BODY_TIMEOUT", "0"),
        ]
        .into();
        let l = Limits::from_vars(|k| vars.get(k).map(|v| v.to_string()));
        assert_eq!(
            l,
            Limits {
                header_timeout: Duration::from_secs(2),
                max_connections_per_client: 8,
                ..Limits::default()
            }
        );
    }
}
