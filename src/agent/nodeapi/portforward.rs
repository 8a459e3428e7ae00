//! `portForward` (`/portForward/NS/POD`): TCP connections to a pod's ports, in one of three
//! framings, as the kubelet's:
//!
//! - SPDY/3.1 with the stream protocol `portforward.k8s.io` (kubectl up to 1.30). Per forwarded
//!   connection the client opens two streams with the headers `streamType` (`error`, then
//!   `data`), `port` and `requestID`; once both are there the agent connects and copies both
//!   ways. A failure is a message on the error stream; the end of the pair's copying ends the
//!   error stream, which is how the client learns the connection is over.
//! - The same SPDY carried in the binary messages of a WebSocket whose subprotocol is
//!   `SPDY/3.1+portforward.k8s.io` (client-go's tunneling connection: kubectl 1.31+ asks for it
//!   first, and falls back to plain SPDY when the upgrade is refused).
//! - The WebSocket channel protocol `v4.channel.k8s.io` (the Python client's `portforward`):
//!   one connection per port of the query's `port`/`ports`, port i on channels 2i (data) and
//!   2i+1 (error), the first message of each channel the port in 2 little-endian bytes; the
//!   WebSocket closes once every port's connection has ended.
//!
//! A connection is made inside the pod's network namespace (a CNI pod: the sandbox's
//! namespace, entered by a thread of its own for the connect only; a hostNetwork pod: the
//! node's loopback). The pod's side ending ends the forwarded connection.
use std::collections::HashMap;
use std::path::PathBuf;

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::exec::{frame, normal_closure, transport_of, Transport};
use super::idle::Activity;
use super::spdy::{self, Event, Frame};
use super::{status, Body, NodeApi};

/// The stream protocol of port forwarding over SPDY.
pub const PORT_FORWARD: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of SPDY tunneled in WebSocket messages.
pub const TUNNELED: &str = "SPDY/3.1+portforward.k8s.io";
/// The WebSocket channel protocol of port forwarding.
pub const CHANNELS: &str = "v4.channel.k8s.io";
/// Bytes read from the pod's side at once.
const CHUNK: usize = 32 * 1024;
/// Client data queued for one connection before the reader waits.
const QUEUED: usize = 4;

/// Where a pod's ports are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// The node's own (hostNetwork).
    Host,
    /// The pod's network namespace, bind-mounted at this path.
    Namespace(PathBuf),
}

/// Connects to `port` on loopback of `network`.
pub async fn connect(network: &Network, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let std_stream = match network {
        Network::Host => return tokio::net::TcpStream::connect(("127.0.0.1", port)).await,
        Network::Namespace(path) => {
            let path = path.clone();
            // a thread of its own enters the namespace, connects and ends: the socket stays in
            // the namespace it was made in, no other task ever runs there
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let connected = std::fs::File::open(&path).and_then(|ns| {
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)?;
                    std::net::TcpStream::connect(("127.0.0.1", port))
                });
                let _ = tx.send(connected);
            });
            rx.await
                .map_err(|_| std::io::Error::other("the connecting thread ended"))??
        }
    };
    std_stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std_stream)
}

/// The network of pod `ns/pod` on this node.
fn network_of(api: &NodeApi, ns: &str, pod: &str) -> Result<Network, Box<Response<Body>>> {
    let views = api.pods.lock().map_err(|_| {
        Box::new(status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the pod view is poisoned",
        ))
    })?;
    let (_, r) = views
        .iter()
        .find(|(k, _)| k.namespace == ns && k.name == pod)
        .ok_or_else(|| {
            Box::new(status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("pod {ns}/{pod} is not on this node"),
            ))
        })?;
    Ok(match r.pod.spec.host_network.unwrap_or(false) {
        true => Network::Host,
        false => Network::Namespace(crate::runtime::sandbox::netns_path(
            &api.state_dir,
            &r.pod.uid,
        )),
    })
}

/// The ports of a WebSocket port forward: the query's `port` (the kubelet's) or `ports` (the
/// API's `PodPortForwardOptions`), repeated or comma-separated, each 1-65535.
pub fn ports_of(query: Option<&str>) -> Result<Vec<u16>, String> {
    let mut ports = vec![];
    for pair in query.unwrap_or("").split('&') {
        let Some(("port" | "ports", value)) = pair.split_once('=') else {
            continue;
        };
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        for p in value.split(',') {
            match p.trim().parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("invalid port {p:?}: a port is 1-65535")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

/// `/portForward/NS/POD`: the upgrade answered, the forwarding run on the upgraded connection.
pub async fn serve(api: &NodeApi, req: Request<Incoming>, ns: &str, pod: &str) -> Response<Body> {
    let transport = match transport_of(&req, &[TUNNELED, CHANNELS], &[PORT_FORWARD]) {
        Ok(t) => t,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    let ports = match &transport {
        Transport::WebSocket { protocol, .. } if *protocol == CHANNELS => {
            match ports_of(req.uri().query()) {
                Ok(p) => p,
                Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", &message),
            }
        }
        _ => vec![],
    };
    let network = match network_of(api, ns, pod) {
        Ok(n) => n,
        Err(resp) => return *resp,
    };
    let resp = transport.switching();
    let on_upgrade = hyper::upgrade::on(req);
    let name = format!("{ns}/{pod}");
    let activity = Activity::new(api.idle_timeout);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "port-forward: the upgrade failed");
                return;
            }
        };
        match transport {
            Transport::Spdy { .. } => over_spdy(upgraded, network, name, activity).await,
            Transport::WebSocket { protocol, .. } if protocol == TUNNELED => {
                over_spdy(tunnel(upgraded), network, name, activity).await
            }
            Transport::WebSocket { .. } => {
                over_websocket(upgraded, network, ports, name, activity).await
            }
        }
    });
    resp
}

/// The bytes of a WebSocket's binary messages as one stream, both ways (client-go's tunneling
/// connection: each write one message, a normal closure the end).
fn tunnel<IO>(io: IO) -> tokio::io::DuplexStream
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(CHUNK);
    tokio::spawn(async move {
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (mut sink, mut messages) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(theirs);
        let inbound = async move {
            while let Some(Ok(m)) = messages.next().await {
                let data = match m {
                    Message::Binary(b) => b,
                    Message::Close(_) => break,
                    _ => continue,
                };
                if wr.write_all(&data).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async move {
            let mut buf = vec![0u8; CHUNK];
            while let Ok(n @ 1..) = rd.read(&mut buf).await {
                let m = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                if sink.send(m).await.is_err() {
                    return;
                }
            }
            let _ = sink.send(Message::Close(Some(normal_closure()))).await;
            let _ = sink.close().await;
        };
        // the SPDY side ends once the client's stream has: both halves end
        tokio::join!(inbound, outbound);
    });
    ours
}

/// Port forwarding over the WebSocket channel protocol: one connection per port of `ports`.
async fn over_websocket<IO>(
    io: IO,
    network: Network,
    ports: Vec<u16>,
    pod: String,
    activity: Activity,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut incoming) = ws.split();
    let (out, mut queued) = mpsc::channel::<Bytes>(QUEUED);
    let writer = tokio::spawn(async move {
        while let Some(m) = queued.recv().await {
            if sink.send(Message::Binary(m)).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(Some(normal_closure()))).await;
        let _ = sink.close().await;
    });
    let mut routes = Vec::with_capacity(ports.len());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, port) in ports.iter().enumerate() {
        // (at most 127 ports: channel numbers are one byte)
        let Ok(data) = u8::try_from(2 * i) else { break };
        let error = data + 1;
        for channel in [data, error] {
            let _ = out.send(frame(channel, &port.to_le_bytes())).await;
        }
        let (tx, rx) = mpsc::channel(QUEUED);
        routes.push(tx);
        let wrap = move |t: Told| match t {
            Told::Data(b) => Some(frame(data, &b)),
            Told::Error(m) => Some(frame(error, m.as_bytes())),
            Told::DataEnd | Told::ErrorEnd => None,
        };
        let teller = Teller {
            out: out.clone(),
            wrap: Arc::new(wrap),
            activity: activity.clone(),
        };
        tasks.spawn(forward(
            network.clone(),
            Some(*port),
            teller,
            rx,
            pod.clone(),
        ));
    }
    drop(out);
    let expired = activity.expired();
    tokio::pin!(expired);
    loop {
        tokio::select! {
            m = incoming.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    activity.seen();
                    let Some((&channel, rest)) = b.split_first() else { continue };
                    let route = routes.get(usize::from(channel / 2)).filter(|_| channel % 2 == 0);
                    if let Some(route) = route {
                        let _ = route.send((Bytes::copy_from_slice(rest), false)).await;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    tasks.abort_all();
                    break;
                }
                Some(Ok(_)) => {}
            },
            done = tasks.join_next() => if done.is_none() { break },
            _ = &mut expired => {
                tasks.abort_all();
                break;
            }
        }
    }
    drop(routes);
    while tasks.join_next().await.is_some() {}
    let _ = writer.await;
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    port: Option<u16>,
    error: Option<u32>,
    data: Option<u32>,
}

async fn over_spdy<IO>(io: IO, network: Network, pod: String, activity: Activity)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let spdy::Conn {
        frames,
        mut events,
        writer,
        reader,
    } = spdy::serve(io);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut routes: HashMap<u32, mpsc::Sender<(Bytes, bool)>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let expired = activity.expired();
    tokio::pin!(expired);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = &mut expired => None,
        };
        let Some(event) = event else { break };
        match event {
            Event::Stream { stream, headers } => {
                let h = |k| spdy::header(&headers, k).unwrap_or("").to_string();
                let pair = pairs.entry(h("requestid")).or_default();
                pair.port = h("port").parse().ok().or(pair.port);
                match h("streamtype").as_str() {
                    "error" => pair.error = Some(stream),
                    "data" => pair.data = Some(stream),
                    _ => continue,
                }
                let request = h("requestid");
                if let Some(Pair {
                    port,
                    error: Some(error),
                    data: Some(data),
                }) = pairs.get(&request)
                {
                    let (tx, rx) = mpsc::channel(QUEUED);
                    routes.insert(*data, tx);
                    let teller = Teller {
                        out: frames.clone(),
                        wrap: Arc::new(spdy_frames(*error, *data)),
                        activity: activity.clone(),
                    };
                    tasks.spawn(forward(network.clone(), *port, teller, rx, pod.clone()));
                    pairs.remove(&request);
                }
            }
            Event::Data { stream, data, fin } => {
                activity.seen();
                if let Some(route) = routes.get(&stream) {
                    let _ = route.send((data, fin)).await;
                }
                if fin {
                    routes.remove(&stream);
                }
            }
            Event::Reset { stream } => {
                routes.remove(&stream);
            }
        }
    }
    // the client went away (or the session idled): its connections go too
    tasks.abort_all();
    let _ = frames.send(Frame::GoAway { last: 0, status: 0 }).await;
    drop(frames);
    let _ = writer.await;
    reader.abort();
}

/// What one forwarded connection tells its client.
enum Told {
    Data(Bytes),
    DataEnd,
    Error(String),
    ErrorEnd,
}

/// The SPDY frames of a connection on streams `error` and `data`.
fn spdy_frames(error: u32, data: u32) -> impl Fn(Told) -> Option<Frame> + Send + Sync {
    move |t| {
        let (stream, fin, data) = match t {
            Told::Data(b) => (data, false, b),
            Told::DataEnd => (data, true, Bytes::new()),
            Told::Error(m) => (error, false, m.into()),
            Told::ErrorEnd => (error, true, Bytes::new()),
        };
        Some(Frame::Data { stream, fin, data })
    }
}

/// Where one connection's news go, in its transport's framing (None: not told).
struct Teller<T> {
    out: mpsc::Sender<T>,
    wrap: Arc<dyn Fn(Told) -> Option<T> + Send + Sync>,
    activity: Activity,
}

impl<T> Clone for Teller<T> {
    fn clone(&self) -> Self {
        Teller {
            out: self.out.clone(),
            wrap: self.wrap.clone(),
            activity: self.activity.clone(),
        }
    }
}

impl<T> Teller<T> {
    /// False once the client's side is gone.
    async fn tell(&self, t: Told) -> bool {
        if matches!(t, Told::Data(_)) {
            self.activity.seen();
        }
        match (self.wrap)(t) {
            Some(m) => self.out.send(m).await.is_ok(),
            None => true,
        }
    }
}

/// One forwarded connection: the client's data from `from_client` to the pod's port, the
/// pod's answer as data; a failure as an error, whose end ends it.
async fn forward<T: Send + 'static>(
    network: Network,
    port: Option<u16>,
    to_client: Teller<T>,
    mut from_client: mpsc::Receiver<(Bytes, bool)>,
    pod: String,
) {
    let connected = match port {
        Some(p) => connect(&network, p).await.map_err(|e| (p, e.to_string())),
        None => Err((0, "no valid port".to_string())),
    };
    let tcp = match connected {
        Ok(tcp) => tcp,
        Err((p, e)) => {
            let message = format!("error forwarding port {p} to pod {pod}: {e}");
            let _ = to_client.tell(Told::Error(message)).await;
            let _ = to_client.tell(Told::ErrorEnd).await;
            let _ = to_client.tell(Told::DataEnd).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut rd, mut wr) = tcp.into_split();
    let to_pod = async move {
        while let Some((bytes, last)) = from_client.recv().await {
            if !bytes.is_empty() && wr.write_all(&bytes).await.is_err() {
                return;
            }
            if last {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let out = to_client.clone();
    let from_pod = async move {
        let mut buf = vec![0u8; CHUNK];
        while let Ok(n @ 1..) = rd.read(&mut buf).await {
            if !out
                .tell(Told::Data(Bytes::copy_from_slice(&buf[..n])))
                .await
            {
                return;
            }
        }
        let _ = out.tell(Told::DataEnd).await;
    };
    // the pod's side ending ends the connection (the client's end only half-closes it)
    tokio::select! {
        _ = from_pod => {}
        _ = async { to_pod.await; std::future::pending::<()>().await } => {}
    }
    let _ = to_client.tell(Told::ErrorEnd).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_host_network_pod_is_reached_on_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mut conn, accepted) = tokio::join!(
            async { connect(&Network::Host, port).await.unwrap() },
            listener.accept()
        );
        let (mut server, _) = accepted.unwrap();
        conn.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    }

    #[test]
    fn the_ports_come_from_port_or_ports_repeated_or_comma_separated() {
        assert_eq!(ports_of(Some("port=80&port=443")), Ok(vec![80, 443]));
        assert_eq!(ports_of(Some("ports=8080%2C9090")), Ok(vec![8080, 9090]));
        assert_eq!(ports_of(Some("ports=8080,9090")), Ok(vec![8080, 9090]));
        assert!(ports_of(Some("port=0")).is_err());
        assert!(ports_of(Some("port=65536")).is_err());
        assert!(ports_of(Some("port=")).is_err());
        assert!(ports_of(None).is_err());
    }

    #[tokio::test]
    async fn a_namespace_that_is_not_there_is_an_error() {
        let e = connect(&Network::Namespace("/nonexistent/netns".into()), 80)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
