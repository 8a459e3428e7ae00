//! The node API: the kubelet's HTTPS API (port 10250 by default, `node-api-listen`) that the
//! server proxies `kubectl logs` (`pods/log`) and `nodes/proxy` to.
//!
//! - TLS with the serving certificate of `serving` (signed by the cluster CA through a
//!   `kubernetes.io/kubelet-serving` CSR; self-signed when no signer answers).
//! - Authentication: a client certificate that chains to the cluster CA; nothing else (no
//!   certificate: 401). The agent cannot check the server's records of revoked certificates,
//!   as a kubelet cannot either.
//! - Authorization: `system:masters` may do everything: the server's own kubelet client
//!   (`kube-apiserver-kubelet-client`, O `system:masters`, as kubeadm issues it) and an admin
//!   certificate; every other identity (a node's) gets 403.
//! - Paths: `/healthz`; `/containerLogs/NS/POD/CONTAINER` (the kubelet's query: follow,
//!   tailLines, sinceSeconds/sinceTime, timestamps, limitBytes, previous), read by `logs`.
//!   Errors are Kubernetes `Status` objects, which the server passes on to kubectl.
//!   `/stats/summary`, `/metrics/resource` (`stats`) and `/metrics` (the agent's own process and tokio runtime, `crate::metrics`).
//!   `/exec/NS/POD/CONTAINER` and `/attach/...` upgraded to WebSocket or SPDY (`exec`), and
//!   `/portForward/NS/POD` (`portforward`).
pub mod exec;
pub mod idle;
pub mod logs;
pub mod portforward;
pub mod serving;
pub mod spdy;
pub mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::agent::config::Config;
use crate::agent::localapi::PodsView;
use crate::pki::{CertInfo, PkiError};

/// The group that may do everything here.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// A TLS handshake must be done within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NodeApiError {
    #[error("listening on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the node API's TLS configuration")]
    Tls(#[source] rustls::Error),
    #[error("the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("{}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", path.display())]
    Pki {
        path: PathBuf,
        #[source]
        source: PkiError,
    },
    #[error("no cluster CA to verify clients with in kubeconfig {}: {reason}", path.display())]
    NoCa { path: PathBuf, reason: String },
    #[error("the serving certificate's signing request")]
    Sign(#[source] crate::agent::join::JoinError),
}

type Body = BoxBody<Bytes, std::io::Error>;

/// What the handlers read.
pub struct NodeApi {
    pub node: String,
    pub state_dir: PathBuf,
    pub containerd_namespace: String,
    pub pods: PodsView,
    /// What runs `exec`.
    pub runtime: Arc<dyn crate::runtime::Runtime>,
    /// How long a stream session may pass no data (`idle`).
    pub idle_timeout: Duration,
}

/// Who a request comes from (its verified client certificate).
#[derive(Debug, Clone)]
struct Caller {
    name: String,
    groups: Vec<String>,
}

/// The serving certificate of the moment (swapped when a signed one replaces a self-signed
/// one, or a renewal replaces one that is due).
#[derive(Debug)]
struct Current(std::sync::RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn certified(serving: &serving::Serving) -> Result<Arc<CertifiedKey>, NodeApiError> {
    let provider = rustls::crypto::ring::default_provider();
    let pki_err = |source| NodeApiError::Pki {
        path: "serving.crt".into(),
        source,
    };
    let chain = crate::pki::certs_from_pem(serving.cert_pem.as_bytes()).map_err(pki_err)?;
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).map_err(|source| {
        pki_err(PkiError::Pem {
            what: "the serving key",
            source,
        })
    })?;
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(NodeApiError::Tls)
}

/// The TLS side: the serving certificate of `current`, client certificates verified against
/// `roots`.
fn acceptor(
    current: Arc<Current>,
    roots: &[CertificateDer<'static>],
) -> Result<TlsAcceptor, NodeApiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).map_err(NodeApiError::Tls)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(NodeApiError::Verifier)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(NodeApiError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(current);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Asks again for the serving certificate (the stored one while it is good): every minute while
/// it is self-signed, every hour after; a new one is served from the next handshake on.
async fn keep_certificate(
    client: kube::Client,
    cfg: Config,
    roots: Vec<CertificateDer<'static>>,
    current: Arc<Current>,
    mut signed: bool,
) {
    loop {
        let wait = if signed { 3600 } else { 60 };
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let Ok(next) = serving::obtain(&client, &cfg, &roots).await else {
            continue;
        };
        let Ok(key) = certified(&next) else { continue };
        let mut now = current.0.write().unwrap_or_else(|e| e.into_inner());
        if now.cert.first() != key.cert.first() {
            tracing::info!(
                signed = next.signed,
                "the node API serves a new certificate"
            );
            *now = key;
        }
        signed = next.signed;
    }
}

/// Listens on `cfg.node_api_listen` and sets it to the address bound (a port 0 becomes the port
/// chosen). None (logged) when it cannot: the node API is not needed to run pods.
pub async fn bind(cfg: &mut Config) -> Option<TcpListener> {
    let bound = TcpListener::bind(cfg.node_api_listen).await.and_then(|l| {
        let addr = l.local_addr()?;
        Ok((l, addr))
    });
    match bound {
        Ok((listener, addr)) => {
            cfg.node_api_listen = addr;
            Some(listener)
        }
        Err(source) => {
            let e = NodeApiError::Listen {
                addr: cfg.node_api_listen,
                source,
            };
            tracing::error!(error = %crate::runtime::chain(&e), "the node API does not run");
            None
        }
    }
}

/// Gets the certificates and serves on `listener` until the process ends. A failure is logged:
/// the node API is not needed to run pods.
pub async fn run(client: kube::Client, cfg: Config, listener: TcpListener, api: NodeApi) {
    if let Err(e) = start(client, &cfg, listener, api).await {
        tracing::error!(error = %crate::runtime::chain(&e), listen = %cfg.node_api_listen, "the node API does not run");
    }
}

async fn start(
    client: kube::Client,
    cfg: &Config,
    listener: TcpListener,
    api: NodeApi,
) -> Result<(), NodeApiError> {
    let roots = serving::cluster_ca(cfg).await?;
    let cert = serving::obtain(&client, cfg, &roots).await?;
    let current = Arc::new(Current(std::sync::RwLock::new(certified(&cert)?)));
    let acceptor = acceptor(current.clone(), &roots)?;
    tracing::info!(listen = %cfg.node_api_listen, signed = cert.signed, "node API listening");
    tokio::spawn(keep_certificate(
        client,
        cfg.clone(),
        roots,
        current,
        cert.signed,
    ));
    serve(listener, acceptor, Arc::new(api)).await;
    Ok(())
}

/// Accepts connections on `listener` for as long as it is open.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, api: Arc<NodeApi>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "node API: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, api) = (acceptor.clone(), api.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "node API: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let caller = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|der| CertInfo::parse(der).ok())
                .map(|info| Caller {
                    name: info.common_name,
                    groups: info.organizations,
                });
            let service = hyper::service::service_fn(move |req| {
                let (api, caller) = (api.clone(), caller.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(&api, caller, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(peer = %peer, error = %e, "node API: connection ended");
            }
        });
    }
}

fn full(code: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed());
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

fn empty() -> Body {
    http_body_util::Empty::new().map_err(|e| match e {}).boxed()
}

/// A Kubernetes `Status` error.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    full(code, "application/json", body.to_string())
}

/// The kubelet's authorizer attributes of a path: (verb, subresource of `nodes`).
fn attributes(method: &http::Method, path: &str) -> (&'static str, &'static str) {
    let verb = match *method {
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "get",
    };
    let sub = match path.split('/').nth(1).unwrap_or("") {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" => "log",
        _ => "proxy",
    };
    (verb, sub)
}

async fn handle(api: &NodeApi, caller: Option<Caller>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let Some(caller) = caller else {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    };
    if !caller.groups.iter().any(|g| g == SYSTEM_MASTERS) {
        let (verb, sub) = attributes(req.method(), &path);
        let message = format!(
            "Forbidden (user={}, verb={verb}, resource=nodes, subresource(s)=[{sub}])",
            caller.name
        );
        return status(StatusCode::FORBIDDEN, "Forbidden", &message);
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method().clone(), segs.as_slice()) {
        (http::Method::GET, ["healthz"]) => full(StatusCode::OK, "text/plain", "ok"),
        (
            http::Method::GET | http::Method::POST,
            [which @ ("exec" | "attach"), ns, pod, container],
        ) => exec::serve(api, req, *which == "attach", ns, pod, container).await,
        (http::Method::GET | http::Method::POST, ["portForward", ns, pod]) => {
            portforward::serve(api, req, ns, pod).await
        }
        (http::Method::GET, ["containerLogs", ns, pod, container]) => {
            container_logs(api, ns, pod, container, req.uri().query()).await
        }
        (http::Method::GET, ["stats", "summary"]) => {
            let s = sample(api).await;
            full(
                StatusCode::OK,
                "application/json",
                stats::summary(&s).to_string(),
            )
        }
        (http::Method::GET, ["metrics"]) => {
            let mut t = crate::metrics::Text::new();
            crate::metrics::write_self(&mut t);
            full(StatusCode::OK, crate::metrics::CONTENT_TYPE, t.finish())
        }
        (http::Method::GET, ["metrics", "resource"]) => {
            let s = sample(api).await;
            full(
                StatusCode::OK,
                crate::metrics::CONTENT_TYPE,
                stats::resource_metrics(&s),
            )
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("node {}: no such path {path}", api.node),
        ),
    }
}

/// A usage sample, taken on a blocking thread, with the containers' writable layers as
/// containerd tells them.
async fn sample(api: &NodeApi) -> stats::Sample {
    let mut s = cgroup_sample(api).await;
    for c in s.pods.iter_mut().flat_map(|p| p.containers.iter_mut()) {
        c.rootfs = api.runtime.rootfs_usage(&c.id).await;
    }
    s
}

async fn cgroup_sample(api: &NodeApi) -> stats::Sample {
    let (node, ns, dir, pods) = (
        api.node.clone(),
        api.containerd_namespace.clone(),
        api.state_dir.clone(),
        api.pods.clone(),
    );
    let blocking = tokio::task::spawn_blocking(move || stats::sample(&node, &ns, &dir, &pods));
    match blocking.await {
        Ok(s) => s,
        Err(_) => stats::Sample {
            node: api.node.clone(),
            at: chrono::Utc::now(),
            usage: Default::default(),
            pods: vec![],
        },
    }
}

fn log_error(e: &logs::LogError) -> Response<Body> {
    match e {
        logs::LogError::NotFound(m) => status(StatusCode::NOT_FOUND, "NotFound", m),
        logs::LogError::BadRequest(m) => status(StatusCode::BAD_REQUEST, "BadRequest", m),
        logs::LogError::Io { .. } => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &crate::runtime::chain(e),
        ),
    }
}

/// `GET /containerLogs/NS/POD/CONTAINER`: the log, streamed as it is read.
async fn container_logs(
    api: &NodeApi,
    ns: &str,
    pod: &str,
    container: &str,
    query: Option<&str>,
) -> Response<Body> {
    let opts = match logs::LogOptions::from_query(query, chrono::Utc::now()) {
        Ok(o) => o,
        Err(e) => return log_error(&e),
    };
    let (path, running) =
        match logs::locate(&api.state_dir, &api.pods, ns, pod, container, opts.previous) {
            Ok(x) => x,
            Err(e) => return log_error(&e),
        };
    let still_running = still_running(api, ns, pod, container, running);
    let rx = match logs::stream(&path, opts, still_running).await {
        Ok(rx) => rx,
        Err(e) => return log_error(&e),
    };
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx);
    let frames = futures::StreamExt::map(frames, |chunk| {
        chunk
            .map(Frame::data)
            .map_err(|e| std::io::Error::other(crate::runtime::chain(&e)))
    });
    let mut resp = Response::new(http_body_util::BodyExt::boxed(StreamBody::new(frames)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Whether the incarnation whose log is followed still runs (the same restart count, running).
fn still_running(
    api: &NodeApi,
    ns: &str,
    pod: &str,
    container: &str,
    running: bool,
) -> logs::StillRunning {
    if !running {
        return Box::new(|| false);
    }
    let (state_dir, pods) = (api.state_dir.clone(), api.pods.clone());
    let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
    let (first, _) =
        logs::locate(&state_dir, &pods, &ns, &pod, &container, false).unwrap_or_default();
    Box::new(move || {
        logs::locate(&state_dir, &pods, &ns, &pod, &container, false)
            .is_ok_and(|(path, running)| running && path == first)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::{self, FileConfig, Flags};

    #[tokio::test]
    async fn port_zero_becomes_the_port_bound() {
        let file = FileConfig {
            node_api_listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let flags = Flags {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            ..Default::default()
        };
        let mut cfg = config::merge(file, &flags, "host").unwrap();
        let listener = bind(&mut cfg).await.unwrap();
        assert_ne!(cfg.node_api_listen.port(), 0);
        assert_eq!(listener.local_addr().unwrap(), cfg.node_api_listen);
        // the address taken: no listener, the agent goes on
        let mut again = cfg.clone();
        assert!(bind(&mut again).await.is_none());
    }

    #[test]
    fn a_bad_address_names_the_key() {
        let file = FileConfig {
            node_api_listen: Some("localhost:10250".into()),
            ..Default::default()
        };
        let flags = Flags {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            ..Default::default()
        };
        let e = config::merge(file, &flags, "host").unwrap_err();
        assert!(e.to_string().starts_with("node-api-listen:"), "{e}");
    }
}
