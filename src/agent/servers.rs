//! The API servers a joined agent may use (`--server https://a:6443,https://b:6443`): replicas of
//! one control plane, any of which serves the node. One connector under the agent's kube client
//! picks the server, so no caller (watches, heartbeat, pod status, events) knows there are several:
//! as k3s's agent load balancer (pkg/agent/loadbalancer), it dials the current server, and when
//! that fails (refused, reset, TLS handshake, timeout) the next, round robin, a server that failed
//! being tried last for a back-off (1 s doubling to 30 s) while another one answers.
//!
//! A fail-over also cuts the connections still open to the server left behind ([`Servers::
//! give_up`], called by the heartbeat when a Lease renewal times out or fails in transport): a
//! watch on a server that went silent (no reset: a partition, a frozen process) ends at once,
//! and kube-runtime's watcher resumes it from its last resourceVersion on the next server (a
//! relist only if that server answers 410 Gone).
//!
//! The kubeconfig path stays one server: an address in front of the replicas (a TCP load
//! balancer) is the way to give it several.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::time::Instant;

/// How long one dial (TCP and TLS) may take before the next server is tried.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The first back-off of a server that failed; doubled on each further failure.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServersError {
    #[error("{server} is not an https://HOST:PORT URL")]
    Url { server: String },
    #[error("no API server given")]
    Empty,
    #[error("every API server failed; the last, {server}")]
    AllFailed {
        server: String,
        #[source]
        source: tower::BoxError,
    },
    #[error("dialling {server} took more than {}s", DIAL_TIMEOUT.as_secs())]
    Timeout { server: String },
}

/// One server's health as the agent saw it.
#[derive(Debug, Clone, Default)]
struct Health {
    /// Not to be tried first before this instant.
    backoff_until: Option<Instant>,
    /// The back-off the next failure sets.
    next_backoff: Option<Duration>,
}

/// The rotation over the servers: which one is current, which are backing off. Time is given,
/// so the rule is tested on paused time.
#[derive(Debug)]
struct Rotation {
    current: usize,
    health: Vec<Health>,
    /// The server that answered last.
    serving: Option<usize>,
}

impl Rotation {
    /// The order to dial in at `now`: from the current server on, round robin, those backing
    /// off after the others (never left out: a server that is all there is gets dialled).
    fn order(&self, now: Instant) -> Vec<usize> {
        let n = self.health.len();
        let ring = (0..n).map(|i| (self.current + i) % n);
        let backing_off = |i: &usize| self.health[*i].backoff_until.is_some_and(|t| t > now);
        let (later, first): (Vec<usize>, Vec<usize>) = ring.partition(backing_off);
        first.into_iter().chain(later).collect()
    }

    /// Server `i` failed at `now`: it backs off (doubling), and the current server moves on
    /// when it was `i`. Whether it moved.
    fn failed(&mut self, i: usize, now: Instant) -> bool {
        let h = &mut self.health[i];
        let backoff = h.next_backoff.unwrap_or(BACKOFF_FIRST);
        h.backoff_until = Some(now + backoff);
        h.next_backoff = Some((backoff * 2).min(BACKOFF_MAX));
        if self.current == i && self.health.len() > 1 {
            self.current = (i + 1) % self.health.len();
            return true;
        }
        false
    }

    /// Server `i` answered: it is current, its back-off forgotten. The server that answered
    /// before, when that was another one.
    fn answered(&mut self, i: usize) -> Option<Option<usize>> {
        self.health[i] = Health::default();
        self.current = i;
        let before = self.serving.replace(i);
        (before != Some(i)).then_some(before)
    }
}

/// What cuts one open connection when its server is given up.
#[derive(Debug, Default)]
struct Cut {
    cut: AtomicBool,
    waker: AtomicWaker,
}

impl Cut {
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

/// The servers of one agent, shared by its connector and its heartbeat.
#[derive(Debug)]
pub struct Servers {
    urls: Vec<http::uri::Authority>,
    rotation: Mutex<Rotation>,
    /// The open connections, by server, to cut on a fail-over.
    open: Mutex<Vec<(usize, Weak<Cut>)>>,
    /// Fail-overs so far: another server answered than the one before.
    failovers: AtomicUsize,
}

impl Servers {
    /// `https://HOST:PORT` URLs, in the order the operator gave them (the first is tried first).
    pub fn new(urls: &[String]) -> Result<Arc<Servers>, ServersError> {
        if urls.is_empty() {
            return Err(ServersError::Empty);
        }
        let authorities = urls
            .iter()
            .map(|u| {
                let bad = || ServersError::Url { server: u.clone() };
                let uri: http::Uri = u.parse().map_err(|_| bad())?;
                if uri.scheme_str() != Some("https") {
                    return Err(bad());
                }
                uri.authority().cloned().ok_or_else(bad)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Servers {
            rotation: Mutex::new(Rotation {
                current: 0,
                health: vec![Health::default(); authorities.len()],
                serving: None,
            }),
            urls: authorities,
            open: Mutex::new(Vec::new()),
            failovers: AtomicUsize::new(0),
        }))
    }

    fn rotation(&self) -> std::sync::MutexGuard<'_, Rotation> {
        self.rotation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The index of the server in use.
    pub fn current(&self) -> usize {
        self.rotation().current
    }

    /// `https://HOST:PORT` of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("https://{}", self.urls[i])
    }

    /// The URLs, in the order given.
    pub fn urls(&self) -> Vec<String> {
        (0..self.urls.len()).map(|i| self.url(i)).collect()
    }

    /// How many times the agent moved to another server.
    pub fn failovers(&self) -> usize {
        self.failovers.load(Ordering::SeqCst)
    }

    /// The order to try the servers in now.
    pub fn order(&self) -> Vec<usize> {
        self.rotation().order(Instant::now())
    }

    /// Server `i` stopped answering (a heartbeat timed out or failed in transport): it backs
    /// off, the next server becomes current, and every connection still open to `i` is cut, so
    /// the watches on it resume on the next server instead of waiting on a silent one.
    pub fn give_up(&self, i: usize) {
        self.failed(i);
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(|e| e.into_inner()));
        let mut kept = Vec::with_capacity(open.len());
        for (server, cut) in open {
            match (server == i, cut.upgrade()) {
                (true, Some(c)) => c.cut(),
                (false, Some(_)) => kept.push((server, cut)),
                (_, None) => {}
            }
        }
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(kept);
    }

    fn failed(&self, i: usize) {
        if self.rotation().failed(i, Instant::now()) {
            tracing::warn!(
                server = %self.urls[i],
                next = %self.urls[self.current()],
                "the API server stopped answering; trying the next"
            );
        }
    }

    fn answered(&self, i: usize) {
        let Some(before) = self.rotation().answered(i) else {
            return;
        };
        match before {
            Some(b) => {
                self.failovers.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(server = %self.urls[i], before = %self.urls[b], "now using API server (failed over)");
            }
            None => tracing::info!(server = %self.urls[i], "now using API server"),
        }
    }

    fn track(&self, i: usize) -> Arc<Cut> {
        let cut = Arc::new(Cut::default());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(_, c)| c.strong_count() > 0);
        open.push((i, Arc::downgrade(&cut)));
        cut
    }

    /// `uri` (the client's base URI and a path) sent to server `i` instead.
    fn retarget(&self, uri: &http::Uri, i: usize) -> http::Uri {
        let mut parts = uri.clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        parts.authority = Some(self.urls[i].clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }
}

/// The connector that picks the server: wraps the TLS connector; each dial goes to the servers
/// in [`Servers::order`] until one answers.
#[derive(Clone)]
pub struct Rotating<C> {
    pub inner: C,
    pub servers: Arc<Servers>,
}

impl<C> tower::Service<http::Uri> for Rotating<C>
where
    C: tower::Service<http::Uri> + Clone + Send + Sync + 'static,
    C::Response: Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<tower::BoxError>,
{
    type Response = Conn<C::Response>;
    type Error = ServersError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ServersError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ServersError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let servers = self.servers.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut last = None;
            for i in servers.order() {
                let target = servers.retarget(&uri, i);
                let mut inner = inner.clone();
                let dial = async {
                    futures::future::poll_fn(|cx| inner.poll_ready(cx))
                        .await
                        .map_err(Into::<tower::BoxError>::into)?;
                    inner
                        .call(target)
                        .await
                        .map_err(Into::<tower::BoxError>::into)
                };
                match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
                    Ok(Ok(io)) => {
                        servers.answered(i);
                        return Ok(Conn {
                            inner: io,
                            cut: servers.track(i),
                        });
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(server = %servers.urls[i], error = %e, "dialling the API server failed");
                        servers.failed(i);
                        last = Some((i, e));
                    }
                    Err(_) => {
                        tracing::debug!(server = %servers.urls[i], "dialling the API server timed out");
                        servers.failed(i);
                        let e = ServersError::Timeout {
                            server: servers.url(i),
                        };
                        last = Some((i, Box::new(e) as tower::BoxError));
                    }
                }
            }
            let (i, source) = last.ok_or(ServersError::Empty)?;
            Err(ServersError::AllFailed {
                server: servers.url(i),
                source,
            })
        })
    }
}

/// A connection to one server, cut (reads and writes fail) when the agent gives that server up.
pub struct Conn<T> {
    inner: T,
    cut: Arc<Cut>,
}

impl<T> Conn<T> {
    fn check(&self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.cut.waker.register(cx.waker());
        self.cut.cut.load(Ordering::SeqCst).then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the agent failed over to another API server",
            )
        })
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Conn<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Conn<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for Conn<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

/// Whether an API error says the server (not the request) failed: transport errors and 5xx.
pub fn server_failed(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Arc<Servers> {
        let urls: Vec<String> = (0..n)
            .map(|i| format!("https://10.0.0.{}:6443", i + 1))
            .collect();
        Servers::new(&urls).unwrap()
    }

    #[test]
    fn urls_must_be_https_with_a_host() {
        assert!(matches!(Servers::new(&[]), Err(ServersError::Empty)));
        for bad in ["http://a:1", "a:1", "https://"] {
            assert!(
                matches!(Servers::new(&[bad.into()]), Err(ServersError::Url { .. })),
                "{bad}"
            );
        }
        let s = servers(2);
        assert_eq!(s.urls(), ["https://10.0.0.1:6443", "https://10.0.0.2:6443"]);
        let uri: http::Uri = "https://10.0.0.1:6443/api/v1/pods?watch=1".parse().unwrap();
        assert_eq!(
            s.retarget(&uri, 1).to_string(),
            "https://10.0.0.2:6443/api/v1/pods?watch=1"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_with_a_failed_server_tried_last_until_its_backoff_passes() {
        let s = servers(3);
        assert_eq!(s.order(), [0, 1, 2]);
        s.answered(0);
        s.failed(0);
        assert_eq!((s.current(), s.failovers()), (1, 0));
        assert_eq!(s.order(), [1, 2, 0], "0 backs off");
        s.failed(1);
        assert_eq!(
            s.order(),
            [2, 0, 1],
            "both back off: 2 first, then in ring order"
        );
        tokio::time::advance(BACKOFF_FIRST).await;
        assert_eq!(
            s.order(),
            [2, 0, 1],
            "the back-off ended: ring order from current"
        );
        // 0 fails again: its back-off doubled
        s.failed(0);
        tokio::time::advance(BACKOFF_FIRST).await;
        assert_eq!(s.order(), [2, 1, 0]);
        tokio::time::advance(BACKOFF_FIRST).await;
        assert_eq!(s.order(), [2, 0, 1]);
        // an answer makes it current and forgets its back-off
        s.answered(0);
        assert_eq!(s.current(), 0);
        assert_eq!(s.order(), [0, 1, 2]);
        assert_eq!(s.failovers(), 0, "0 answers again: no fail-over");
        s.failed(0);
        s.answered(1);
        s.answered(1);
        assert_eq!(s.failovers(), 1, "1 answers instead of 0: one fail-over");
    }

    #[tokio::test(start_paused = true)]
    async fn the_backoff_doubles_to_its_cap() {
        let s = servers(2);
        for _ in 0..10 {
            s.failed(1);
        }
        tokio::time::advance(BACKOFF_MAX - Duration::from_millis(1)).await;
        let until = s.rotation().health[1].backoff_until.unwrap();
        assert!(until > Instant::now(), "backing off for {BACKOFF_MAX:?}");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(until <= Instant::now(), "not longer");
        assert_eq!(s.rotation().health[1].next_backoff, Some(BACKOFF_MAX));
    }

    #[test]
    fn one_server_stays_current_when_it_fails() {
        let s = servers(1);
        s.failed(0);
        assert_eq!((s.current(), s.order()), (0, vec![0]));
    }

    #[test]
    fn giving_up_a_server_cuts_its_connections_only() {
        let s = servers(2);
        let (a, b) = (s.track(0), s.track(1));
        s.give_up(0);
        assert!(a.cut.load(Ordering::SeqCst));
        assert!(!b.cut.load(Ordering::SeqCst));
        assert_eq!(s.current(), 1);
        drop(b);
        let _c = s.track(1);
        assert_eq!(
            s.open.lock().unwrap().len(),
            1,
            "dropped connections are forgotten"
        );
    }
}
