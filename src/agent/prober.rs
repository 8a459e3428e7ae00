//! Probe I/O at the edge: running one probe (exec through the runtime; httpGet, tcpSocket and
//! grpc over the pod's loopback) behind the small `Prober` trait, so that worker tests use a
//! fake. The decisions (thresholds, gates, kills) are in `core::probe`.
//!
//! Pods without hostNetwork have only a loopback interface in their own network namespace: the
//! socket of a network probe is opened inside that namespace, on a thread of its own that enters
//! it with setns(2) and then ends, so no runtime thread ever changes namespace. Over that socket,
//! hyper speaks HTTP/1.1 (httpGet) and tonic the gRPC health protocol (tonic-health's client).
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::core::probe::{http_success, Handler, Outcome};
use crate::runtime::{chain, ExecExit, Runtime};

/// Where a probe runs: the container (exec) and the network namespace (None: the host's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub container_id: String,
    pub netns: Option<PathBuf>,
}

#[async_trait::async_trait]
pub trait Prober: Send + Sync + 'static {
    /// Runs `handler` once against `target`; a run longer than `timeout` is a failure.
    async fn probe(&self, target: &Target, handler: &Handler, timeout: Duration) -> Outcome;
}

/// The real prober: exec through the runtime (containerd Tasks.Exec), TCP from this process.
pub struct NetProber {
    pub runtime: Arc<dyn Runtime>,
}

/// The User-Agent the kubelet sends.
const USER_AGENT: &str = "kube-probe/1.33";
/// The kubelet reads at most this much of a probe's response.
const MAX_RESPONSE: usize = 10 * 1024;

#[async_trait::async_trait]
impl Prober for NetProber {
    async fn probe(&self, target: &Target, handler: &Handler, timeout: Duration) -> Outcome {
        match handler {
            Handler::Exec(cmd) => {
                // the runtime kills the command at `timeout`; the outer bound covers a hung call
                let run = self.runtime.exec_sync(&target.container_id, cmd, timeout);
                match tokio::time::timeout(timeout + Duration::from_secs(10), run).await {
                    Ok(Ok(r)) => match r.exit {
                        // as the kubelet's exec prober: the output is the failure's message
                        ExecExit::Exited(0) => Outcome::Success,
                        ExecExit::Exited(code) if r.output.is_empty() => {
                            Outcome::Failure(format!("command {cmd:?} exited with {code}"))
                        }
                        ExecExit::Exited(code) => Outcome::Failure(format!(
                            "command {cmd:?} exited with {code}: {}",
                            r.output
                        )),
                        ExecExit::TimedOut => Outcome::Failure(format!(
                            "command {cmd:?} timed out after {}s",
                            timeout.as_secs()
                        )),
                    },
                    Ok(Err(e)) => Outcome::Error(chain(&e)),
                    Err(_) => Outcome::Error(format!("exec {cmd:?}: no answer from the runtime")),
                }
            }
            Handler::Http {
                https,
                host,
                port,
                path,
                headers,
            } => {
                let url = Url {
                    https: *https,
                    host: host.as_deref(),
                    port: *port,
                    path: path.clone(),
                };
                let run = http_get(target, url.clone(), headers, timeout);
                match tokio::time::timeout(timeout, run).await {
                    Ok(o) => o,
                    Err(_) => Outcome::Failure(format!(
                        "Get \"{url}\": timeout after {}s",
                        timeout.as_secs()
                    )),
                }
            }
            Handler::Grpc { port, service } => {
                match tokio::time::timeout(timeout, grpc_check(target, *port, service, timeout))
                    .await
                {
                    Ok(o) => o,
                    Err(_) => Outcome::Failure(format!(
                        "timeout: health rpc did not complete within {timeout:?}"
                    )),
                }
            }
            Handler::Tcp { host, port } => {
                match connect(target, host.as_deref(), *port, timeout).await {
                    Ok(_) => Outcome::Success,
                    Err(e) => Outcome::Failure(format!(
                        "dial tcp {}:{port}: {e}",
                        host.as_deref().unwrap_or("127.0.0.1")
                    )),
                }
            }
        }
    }
}

/// Why an httpGet probe got no answer (its failure message, after `Get "URL": `).
#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("dial tcp {addr}")]
    Dial {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid request")]
    Request(#[source] http::Error),
    #[error("invalid server name {0:?}")]
    ServerName(String),
    #[error("tls handshake")]
    Tls(#[source] std::io::Error),
    #[error("HTTP/1.1 exchange")]
    Http(#[source] hyper::Error),
}

/// Dials the pod's loopback for tonic, inside its network namespace.
#[derive(Clone)]
struct PodConnector {
    target: Target,
    timeout: Duration,
}

impl tonic::codegen::Service<http::Uri> for PodConnector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (target, timeout) = (self.target.clone(), self.timeout);
        Box::pin(async move {
            let port = uri.port_u16().unwrap_or(80);
            let s = connect(&target, None, port, timeout).await?;
            Ok(TokioIo::new(s))
        })
    }
}

/// grpc.health.v1.Health/Check as the kubelet's grpc prober calls it (pkg/probe/grpc).
async fn grpc_check(target: &Target, port: u16, service: &str, timeout: Duration) -> Outcome {
    use tonic_health::pb::health_check_response::ServingStatus;
    let addr = format!("http://127.0.0.1:{port}");
    let endpoint = match tonic::transport::Endpoint::from_shared(addr.clone()) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return Outcome::Error(chain(&e)),
    };
    let connector = PodConnector {
        target: target.clone(),
        timeout,
    };
    let channel = match endpoint.connect_with_connector(connector).await {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service \"127.0.0.1:{port}\" within {timeout:?}: {}",
                chain(&e)
            ))
        }
    };
    let mut client = HealthClient::new(channel);
    let req = HealthCheckRequest {
        service: service.to_string(),
    };
    match client.check(req).await {
        Ok(r) => {
            let status = r.into_inner().status();
            if status == ServingStatus::Serving {
                Outcome::Success
            } else {
                Outcome::Failure(format!(
                    "service unhealthy (responded with \"{}\")",
                    status.as_str_name()
                ))
            }
        }
        Err(s) if s.code() == tonic::Code::Unimplemented => Outcome::Failure(format!(
            "this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
            s.message()
        )),
        Err(s) if s.code() == tonic::Code::DeadlineExceeded => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {timeout:?}"
        )),
        Err(s) => Outcome::Failure(format!("error: health rpc probe failed: {}", chain(&s))),
    }
}

/// A TCP connection to `host:port` (default: loopback of the pod's network namespace).
async fn connect(
    target: &Target,
    host: Option<&str>,
    port: u16,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let addr: SocketAddr = match host {
        None => SocketAddr::from(([127, 0, 0, 1], port)),
        Some(h) => {
            let h = h.to_string();
            tokio::task::spawn_blocking(move || (h.as_str(), port).to_socket_addrs())
                .await
                .map_err(std::io::Error::other)??
                .next()
                .ok_or_else(|| std::io::Error::other("no address"))?
        }
    };
    // an explicit host is dialled from the node, as the kubelet does
    let netns = match host {
        None => target.netns.clone(),
        Some(_) => None,
    };
    let Some(ns) = netns else {
        return tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "i/o timeout"))?;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("probe-netns".into())
        .spawn(move || {
            let _ = tx.send(connect_in_netns(&ns, addr, timeout));
        })?;
    let stream = rx.await.map_err(std::io::Error::other)??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

/// Connects from inside the network namespace mounted at `ns`. Runs on a thread that ends after.
fn connect_in_netns(
    ns: &std::path::Path,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<std::net::TcpStream> {
    let f = std::fs::File::open(ns)?;
    // moves this (dedicated, short-lived) thread only
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
    // the socket belongs to the namespace it was created in, whatever thread uses it later
    std::net::TcpStream::connect_timeout(&addr, timeout)
}

/// The kubelet's HTTP client follows at most this many redirects, to the same host only.
const MAX_REDIRECTS: usize = 10;

/// What an httpGet probe asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url<'a> {
    https: bool,
    /// None: the pod's address (127.0.0.1 in its network namespace).
    host: Option<&'a str>,
    port: u16,
    path: String,
}

impl Url<'_> {
    fn host(&self) -> &str {
        self.host.unwrap_or("127.0.0.1")
    }
}

impl std::fmt::Display for Url<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}{}", self.host(), self.port, self.path)
    }
}

/// What one GET answered.
struct Answer {
    status: u16,
    /// The `Location` header, for a redirect.
    location: Option<String>,
    /// The start of the body (at most [`MAX_RESPONSE`] bytes), as the kubelet keeps it.
    body: Vec<u8>,
}

async fn http_get(
    target: &Target,
    mut url: Url<'_>,
    headers: &[(String, String)],
    timeout: Duration,
) -> Outcome {
    let mut redirects = 0;
    loop {
        let answer = match get(target, &url, headers, timeout).await {
            Ok(a) => a,
            Err(e) => return Outcome::Failure(format!("Get \"{url}\": {}", chain(&e))),
        };
        let code = answer.status;
        if (300..400).contains(&code) {
            // followed when it stays on the same host (the kubelet's redirectChecker); otherwise
            // the 3xx itself is the answer: a success (with a warning, in the kubelet)
            let next = answer.location.as_deref().and_then(|l| same_host(l, &url));
            if let Some((https, port, path)) = next {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Outcome::Failure(format!(
                        "Get \"{url}\": stopped after {MAX_REDIRECTS} redirects"
                    ));
                }
                url = Url {
                    https,
                    port,
                    path,
                    ..url
                };
                continue;
            }
            // the kubelet's DoHTTPProbe: a 3xx it did not follow is a success with a warning
            return Outcome::Warning(format!(
                "Probe terminated redirects, Response body: {}",
                String::from_utf8_lossy(&answer.body)
            ));
        }
        return if http_success(code) {
            Outcome::Success
        } else {
            Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
}

/// The request of one GET: the probe's headers, after the kubelet's defaults for Host,
/// User-Agent and Accept unless the probe sets them.
fn request(
    url: &Url<'_>,
    headers: &[(String, String)],
) -> Result<http::Request<Empty<Bytes>>, HttpError> {
    use http::header;
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut req = http::Request::get(url.path.as_str());
    if !has("Host") {
        req = req.header(header::HOST, format!("{}:{}", url.host(), url.port));
    }
    if !has("User-Agent") {
        req = req.header(header::USER_AGENT, USER_AGENT);
    }
    if !has("Accept") {
        req = req.header(header::ACCEPT, "*/*");
    }
    for (n, v) in headers {
        req = req.header(n.as_str(), v.as_str());
    }
    req.header(header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(HttpError::Request)
}

/// One GET over a connection of its own (inside the pod's namespace unless a host is named).
async fn get(
    target: &Target,
    url: &Url<'_>,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<Answer, HttpError> {
    let req = request(url, headers)?;
    let stream = connect(target, url.host, url.port, timeout)
        .await
        .map_err(|source| HttpError::Dial {
            addr: format!("{}:{}", url.host(), url.port),
            source,
        })?;
    if !url.https {
        return exchange(TokioIo::new(stream), req).await;
    }
    let name = rustls::pki_types::ServerName::try_from(url.host().to_string())
        .map_err(|_| HttpError::ServerName(url.host().to_string()))?;
    let connector = tls_connector().map_err(HttpError::Tls)?;
    let tls = connector
        .connect(name, stream)
        .await
        .map_err(HttpError::Tls)?;
    exchange(TokioIo::new(tls), req).await
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends the request over `io` with hyper's HTTP/1.1 client connection and reads the answer:
/// the status, the Location header and at most 10 KiB of the body, as the kubelet reads.
async fn exchange<I>(io: I, req: http::Request<Empty<Bytes>>) -> Result<Answer, HttpError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // header names as Go writes them (User-Agent, not user-agent), as the kubelet's probes send
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(io)
        .await
        .map_err(HttpError::Http)?;
    // the connection is driven beside the request and dropped with it
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let resp = sender.send_request(req).await.map_err(HttpError::Http)?;
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = resp.into_body();
    let mut kept = Vec::new();
    while kept.len() < MAX_RESPONSE {
        match body.frame().await {
            Some(Ok(frame)) => {
                let data = frame.data_ref().map_or(&[][..], |b| &b[..]);
                let room = MAX_RESPONSE - kept.len();
                kept.extend_from_slice(&data[..data.len().min(room)]);
            }
            Some(Err(e)) => return Err(HttpError::Http(e)),
            None => break,
        }
    }
    Ok(Answer {
        status,
        location,
        body: kept,
    })
}

/// TLS as the kubelet's HTTPS probes do it: InsecureSkipVerify (the certificate is not checked;
/// the handshake's signatures still are).
fn tls_connector() -> std::io::Result<tokio_rustls::TlsConnector> {
    static CONNECTOR: std::sync::OnceLock<Result<tokio_rustls::TlsConnector, String>> =
        std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
                .with_no_client_auth();
            Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
        })
        .clone()
        .map_err(std::io::Error::other)
}

#[derive(Debug)]
struct SkipVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Where a redirect to `location` from `from` goes when it stays on the same host name:
/// (https, port, path). A relative location keeps the scheme and port.
fn same_host(location: &str, from: &Url<'_>) -> Option<(bool, u16, String)> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Some((from.https, from.port, location.to_string()));
    }
    let (https, rest) = match location.strip_prefix("http://") {
        Some(rest) => (false, rest),
        None => (true, location.strip_prefix("https://")?),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (h, p) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, if https { 443 } else { 80 }),
    };
    h.eq_ignore_ascii_case(from.host())
        .then_some((https, p, path))
}

#[cfg(test)]
pub mod fake {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// Answers each exec probe by its command's first word from a table the test changes;
    /// records every run and where it ran.
    #[derive(Default)]
    pub struct FakeProber {
        pub answers: Mutex<BTreeMap<String, Outcome>>,
        pub runs: Mutex<Vec<(String, String)>>,
        pub targets: Mutex<Vec<Target>>,
    }

    impl FakeProber {
        pub fn set(&self, cmd: &str, o: Outcome) {
            self.answers.lock().unwrap().insert(cmd.to_string(), o);
        }
        pub fn count(&self, cmd: &str) -> usize {
            self.runs
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, c)| c == cmd)
                .count()
        }
    }

    #[async_trait::async_trait]
    impl Prober for FakeProber {
        async fn probe(&self, target: &Target, handler: &Handler, _timeout: Duration) -> Outcome {
            let key = match handler {
                Handler::Exec(cmd) => cmd.first().cloned().unwrap_or_default(),
                Handler::Http { port, .. } => format!("http:{port}"),
                Handler::Tcp { port, .. } => format!("tcp:{port}"),
                Handler::Grpc { port, .. } => format!("grpc:{port}"),
            };
            self.runs
                .lock()
                .unwrap()
                .push((target.container_id.clone(), key.clone()));
            self.targets.lock().unwrap().push(target.clone());
            self.answers
                .lock()
                .unwrap()
                .get(&key)
                .cloned()
                .unwrap_or(Outcome::Success)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The real prober, probing in the host's network namespace.
    fn on_the_host() -> (NetProber, Target) {
        let p = NetProber {
            runtime: Arc::new(crate::agent::worker::fake::FakeRuntime::default()),
        };
        let target = Target {
            container_id: "c".into(),
            netns: None,
        };
        (p, target)
    }

    fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Handler {
        Handler::Http {
            https: false,
            host: None,
            port,
            path: path.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn redirects_stay_on_the_host() {
        let from = Url {
            https: false,
            host: None,
            port: 8080,
            path: "/".into(),
        };
        for (loc, want) in [
            ("/ok", Some((false, 8080, "/ok"))),
            ("http://127.0.0.1:9090/x", Some((false, 9090, "/x"))),
            ("http://127.0.0.1", Some((false, 80, "/"))),
            ("https://127.0.0.1/x", Some((true, 443, "/x"))),
            ("http://example.com/x", None),
            ("//example.com/x", None),
            ("ftp://127.0.0.1/x", None),
        ] {
            let want = want.map(|(h, p, path)| (h, p, path.to_string()));
            assert_eq!(same_host(loc, &from), want, "{loc}");
        }
    }

    /// A self-signed certificate and its PKCS#8 key (DER), made by openssl.
    fn self_signed() -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.der",
            "-outform",
            "DER",
            "-days",
            "1",
            "-subj",
            "/CN=probe",
        ]);
        run(&[
            "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key.der",
        ]);
        (
            std::fs::read(dir.path().join("cert.der")).unwrap(),
            std::fs::read(dir.path().join("key.der")).unwrap(),
        )
    }

    #[tokio::test]
    async fn https_skips_certificate_verification_as_the_kubelet_does() {
        let (cert, key) = self_signed();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(cert)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut paths = Vec::new();
            for answer in ["204 No Content", "503 Service Unavailable"] {
                let (s, _) = listener.accept().await.unwrap();
                let mut s = acceptor.accept(s).await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                paths.push(req.lines().next().unwrap_or("").to_string());
                let _ = s
                    .write_all(format!("HTTP/1.1 {answer}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
                let _ = s.shutdown().await;
            }
            paths
        });
        let (p, target) = on_the_host();
        let https = Handler::Http {
            https: true,
            host: None,
            port,
            path: "/ready".into(),
            headers: vec![],
        };
        let t = Duration::from_secs(5);
        assert_eq!(p.probe(&target, &https, t).await, Outcome::Success);
        assert!(
            matches!(p.probe(&target, &https, t).await, Outcome::Failure(m) if m.contains("503"))
        );
        assert_eq!(server.await.unwrap(), ["GET /ready HTTP/1.1"; 2]);
    }

    /// tonic-health's server on loopback, its overall status `status`; its port.
    async fn health_server(status: tonic_health::ServingStatus) -> u16 {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("", status).await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
        tokio::spawn(async move {
            // the reporter lives as long as the server
            let _reporter = reporter;
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
        });
        port
    }

    #[tokio::test]
    async fn grpc_health_check_as_the_kubelet_calls_it() {
        use tonic_health::ServingStatus;
        let (p, target) = on_the_host();
        let t = Duration::from_secs(2);
        let grpc = |port, service: &str| Handler::Grpc {
            port,
            service: service.into(),
        };
        let serving = health_server(ServingStatus::Serving).await;
        assert_eq!(
            p.probe(&target, &grpc(serving, ""), t).await,
            Outcome::Success
        );
        assert!(matches!(
            p.probe(&target, &grpc(serving, "unknown"), t).await,
            Outcome::Failure(m) if m.starts_with("error: health rpc probe failed: rpc error: code = NotFound desc = ")
        ));
        let not = health_server(ServingStatus::NotServing).await;
        assert!(matches!(
            p.probe(&target, &grpc(not, ""), t).await,
            Outcome::Failure(m) if m.contains("NOT_SERVING")
        ));
        // nothing listening: a failure, within the timeout
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = std::time::Instant::now();
        assert!(matches!(
            p.probe(&target, &grpc(closed, ""), t).await,
            Outcome::Failure(_)
        ));
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    /// A server that answers each connection with the next of `answers` (raw bytes) and then
    /// keeps the connection open until the client closes it; the requests it read.
    async fn raw_server(answers: Vec<Vec<u8>>) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
                let _ = s.write_all(&answer).await;
                // the client ends the exchange: read until it closes
                while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            }
            seen
        });
        (port, server)
    }

    #[tokio::test]
    async fn http_answers_are_read_as_the_kubelet_reads_them() {
        // a body that never ends: 10 KiB of it are read, then the answer counts
        let mut endless = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
        endless.extend(vec![b'x'; 20 * 1024]);
        let (port, server) = raw_server(vec![
            endless,
            b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(),
            b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ])
        .await;
        let (p, target) = on_the_host();
        let http = http_get(port, "/", &[("Host", "probe.example")]);
        let t = Duration::from_secs(5);
        let started = std::time::Instant::now();
        assert_eq!(p.probe(&target, &http, t).await, Outcome::Success);
        assert!(started.elapsed() < t, "the body is not read to its end");
        let not_http = p.probe(&target, &http, t).await;
        assert!(
            matches!(&not_http, Outcome::Failure(m) if m.starts_with(&format!("Get \"http://127.0.0.1:{port}/\": HTTP/1.1 exchange: "))),
            "{not_http:?}"
        );
        assert_eq!(
            p.probe(&target, &http, t).await,
            Outcome::Failure("HTTP probe failed with statuscode: 404".into())
        );
        let seen = server.await.unwrap();
        // the probe's Host header replaces the default one
        assert!(seen[0].contains("Host: probe.example\r\n"), "{}", seen[0]);
        assert_eq!(seen[0].matches("Host:").count(), 1, "{}", seen[0]);
        // nothing listens any more: the dial's error is the message
        let refused = p.probe(&target, &http, t).await;
        assert_eq!(
            refused,
            Outcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/\": dial tcp 127.0.0.1:{port}: Connection refused (os error 111)"
            ))
        );
        // a header no HTTP request may carry fails before anything is dialled
        let bad = http_get(port, "/", &[("X-Bad", "a\r\nb")]);
        assert!(matches!(
            p.probe(&target, &bad, t).await,
            Outcome::Failure(m) if m.contains("invalid request")
        ));
    }

    #[tokio::test]
    async fn http_and_tcp_on_the_host_loopback() {
        let answers = [
            ("200 OK", ""),
            (
                "302 Found\r\nLocation: http://example.com/elsewhere",
                "moved",
            ),
            ("500 Internal Server Error", ""),
            ("301 Moved Permanently\r\nLocation: /broken", ""),
            ("503 Service Unavailable", ""),
        ]
        .map(|(a, body)| {
            format!(
                "HTTP/1.1 {a}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        });
        let (port, server) = raw_server(answers.to_vec()).await;
        let (p, target) = on_the_host();
        let http = http_get(port, "/healthz", &[("X-Probe", "yes")]);
        let t = Duration::from_secs(2);
        assert_eq!(p.probe(&target, &http, t).await, Outcome::Success);
        // a redirect to another host is not followed: a success with the kubelet's warning
        assert_eq!(
            p.probe(&target, &http, t).await,
            Outcome::Warning("Probe terminated redirects, Response body: moved".into())
        );
        assert!(
            matches!(p.probe(&target, &http, t).await, Outcome::Failure(m) if m.contains("500"))
        );
        // a redirect on the same host is followed, to a 503 here
        assert!(
            matches!(p.probe(&target, &http, t).await, Outcome::Failure(m) if m.contains("503"))
        );
        let seen = server.await.unwrap();
        assert!(
            seen[4].starts_with("GET /broken HTTP/1.1\r\n"),
            "{}",
            seen[4]
        );
        assert!(
            seen[0].starts_with("GET /healthz HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(seen[0].contains("X-Probe: yes\r\n"), "{}", seen[0]);
        assert!(seen[0].contains("User-Agent: kube-probe/"), "{}", seen[0]);
        // the listener is gone: connection refused is a failure, for http and tcp alike
        assert!(matches!(
            p.probe(&target, &http, t).await,
            Outcome::Failure(_)
        ));
        let tcp = Handler::Tcp { host: None, port };
        assert!(matches!(
            p.probe(&target, &tcp, t).await,
            Outcome::Failure(_)
        ));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = Handler::Tcp {
            host: None,
            port: l.local_addr().unwrap().port(),
        };
        assert_eq!(p.probe(&target, &tcp, t).await, Outcome::Success);
    }
}
