//! `portForward` (`/portForward/NS/POD`): TCP connections to a pod's ports, over SPDY/3.1 with
//! the stream protocol `portforward.k8s.io` (kubectl; from 1.31 on it asks for a WebSocket
//! first and falls back to SPDY when refused).
//!
//! Per forwarded connection the client opens two streams with the headers `streamType` (`error`,
//! then `data`), `port` and `requestID`; once both are there the agent connects to the port inside
//! the pod's network namespace (a CNI pod: the sandbox's namespace, entered by a thread of its
//! own for the connect only; a hostNetwork pod: the node's loopback) and copies both ways. A
//! failure is a message on the error stream; the end of the pair's copying ends the error
//! stream, which is how the client learns the connection is over.
use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use super::exec::{transport_of, Transport};
use super::spdy::{self, Event, Frame};
use super::{status, Body, NodeApi};

/// The stream protocol of port forwarding over SPDY.
pub const PORT_FORWARD: &str = "portforward.k8s.io";
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

/// `/portForward/NS/POD`: the upgrade answered, the forwarding run on the upgraded connection.
pub async fn serve(api: &NodeApi, req: Request<Incoming>, ns: &str, pod: &str) -> Response<Body> {
    let transport = match transport_of(&req, &[], &[PORT_FORWARD]) {
        Ok(t) => t,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    let network = match network_of(api, ns, pod) {
        Ok(n) => n,
        Err(resp) => return *resp,
    };
    let resp = transport.switching();
    let on_upgrade = hyper::upgrade::on(req);
    let name = format!("{ns}/{pod}");
    tokio::spawn(async move {
        match (on_upgrade.await, transport) {
            (Ok(upgraded), Transport::Spdy { .. }) => {
                over_spdy(TokioIo::new(upgraded), network, name).await
            }
            (Ok(_), Transport::WebSocket { .. }) => {}
            (Err(e), _) => tracing::debug!(error = %e, "port-forward: the upgrade failed"),
        }
    });
    resp
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    port: Option<u16>,
    error: Option<u32>,
    data: Option<u32>,
}

async fn over_spdy<IO>(io: IO, network: Network, pod: String)
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
    while let Some(event) = events.recv().await {
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
                    tasks.spawn(forward(
                        network.clone(),
                        *port,
                        (*error, *data),
                        frames.clone(),
                        rx,
                        pod.clone(),
                    ));
                    pairs.remove(&request);
                }
            }
            Event::Data { stream, data, fin } => {
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
    // the client went away: its connections go too
    tasks.abort_all();
    let _ = frames.send(Frame::GoAway { last: 0, status: 0 }).await;
    drop(frames);
    let _ = writer.await;
    reader.abort();
}

/// One forwarded connection: the client's data from `from_client` to the pod's port, the
/// pod's answer to the data stream; a failure on the error stream, whose end ends it.
async fn forward(
    network: Network,
    port: Option<u16>,
    (error, data): (u32, u32),
    frames: mpsc::Sender<Frame>,
    mut from_client: mpsc::Receiver<(Bytes, bool)>,
    pod: String,
) {
    let fin = |stream| Frame::Data {
        stream,
        fin: true,
        data: Bytes::new(),
    };
    let connected = match port {
        Some(p) => connect(&network, p).await.map_err(|e| (p, e.to_string())),
        None => Err((0, "no valid port".to_string())),
    };
    let tcp = match connected {
        Ok(tcp) => tcp,
        Err((p, e)) => {
            let message = format!("error forwarding port {p} to pod {pod}: {e}");
            let _ = frames
                .send(Frame::Data {
                    stream: error,
                    fin: false,
                    data: message.into(),
                })
                .await;
            let _ = frames.send(fin(error)).await;
            let _ = frames.send(fin(data)).await;
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
    let out = frames.clone();
    let from_pod = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let f = Frame::Data {
                        stream: data,
                        fin: false,
                        data: Bytes::copy_from_slice(&buf[..n]),
                    };
                    if out.send(f).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = out.send(fin(data)).await;
    };
    // the pod's side ending ends the connection (the client's end only half-closes it)
    tokio::select! {
        _ = from_pod => {}
        _ = async { to_pod.await; std::future::pending::<()>().await } => {}
    }
    let _ = frames.send(fin(error)).await;
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

    #[tokio::test]
    async fn a_namespace_that_is_not_there_is_an_error() {
        let e = connect(&Network::Namespace("/nonexistent/netns".into()), 80)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
