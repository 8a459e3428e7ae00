//! Probe I/O at the edge: running one probe (exec through the runtime, httpGet and tcpSocket over
//! loopback) behind the small `Prober` trait, so that worker tests use a fake. The decisions
//! (thresholds, gates, kills) are in `core::probe`.
//!
//! Pods without hostNetwork have only a loopback interface in their own network namespace: the
//! socket of an httpGet or tcpSocket probe is opened inside that namespace, on a thread of its own
//! that enters it with setns(2) and then ends, so no runtime thread ever changes namespace.
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::core::probe::{http_success, Handler, Outcome};
use crate::runtime::{ExecExit, Runtime};

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
                    Ok(Err(e)) => Outcome::Error(e.to_string()),
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

/// The gRPC health checking protocol, client and server (the server answers tests).
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}

/// Dials the pod's loopback for tonic, inside its network namespace.
#[derive(Clone)]
struct PodConnector {
    target: Target,
    timeout: Duration,
}

impl tonic::codegen::Service<http::Uri> for PodConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
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
            Ok(hyper_util::rt::TokioIo::new(s))
        })
    }
}

/// grpc.health.v1.Health/Check as the kubelet's grpc prober calls it (pkg/probe/grpc).
async fn grpc_check(target: &Target, port: u16, service: &str, timeout: Duration) -> Outcome {
    use health::health_check_response::ServingStatus;
    let addr = format!("http://127.0.0.1:{port}");
    let endpoint = match tonic::transport::Endpoint::from_shared(addr.clone()) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let connector = PodConnector {
        target: target.clone(),
        timeout,
    };
    let channel = match endpoint.connect_with_connector(connector).await {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service \"127.0.0.1:{port}\" within {timeout:?}: {e}"
            ))
        }
    };
    let mut client = health::health_client::HealthClient::new(channel);
    let req = health::HealthCheckRequest {
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
        Err(s) => Outcome::Failure(format!("error: health rpc probe failed: {s}")),
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
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(ns)?;
    // SAFETY: setns on this (dedicated, short-lived) thread with a valid namespace fd.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
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

impl std::fmt::Display for Url<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        let host = self.host.unwrap_or("127.0.0.1");
        write!(f, "{scheme}://{host}:{}{}", self.port, self.path)
    }
}

async fn http_get(
    target: &Target,
    mut url: Url<'_>,
    headers: &[(String, String)],
    timeout: Duration,
) -> Outcome {
    let mut redirects = 0;
    loop {
        let head = match http_head(target, &url, headers, timeout).await {
            Ok(h) => h,
            Err(e) => return Outcome::Failure(format!("Get \"{url}\": {e}")),
        };
        let Some(code) = status_code(&head) else {
            return Outcome::Failure(format!("Get \"{url}\": malformed HTTP response"));
        };
        if (300..400).contains(&code) {
            // followed when it stays on the same host (the kubelet's redirectChecker); otherwise
            // the 3xx itself is the answer: a success (with a warning, in the kubelet)
            let next = header(&head, "location").and_then(|l| same_host(&l, &url));
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
        }
        return if http_success(code) {
            Outcome::Success
        } else {
            Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
}

/// One GET; returns the response head (status line and headers, at most MAX_RESPONSE bytes).
async fn http_head(
    target: &Target,
    url: &Url<'_>,
    headers: &[(String, String)],
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let host = url.host.unwrap_or("127.0.0.1");
    let port = url.port;
    let mut req = format!("GET {} HTTP/1.1\r\n", url.path);
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("Host") {
        req.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    if !has("User-Agent") {
        req.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
    }
    if !has("Accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (n, v) in headers {
        if n.contains(['\r', '\n']) || v.contains(['\r', '\n']) {
            return Err(std::io::Error::other(format!("invalid header {n:?}")));
        }
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let stream = connect(target, url.host, port, timeout).await?;
    if !url.https {
        return exchange(stream, req.as_bytes()).await;
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::other(format!("server name {host:?}: {e}")))?;
    let tls = tls_connector()?.connect(name, stream).await?;
    exchange(tls, req.as_bytes()).await
}

/// Writes the request and reads the response head.
async fn exchange<S>(mut stream: S, req: &[u8]) -> std::io::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(req).await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_RESPONSE {
        match stream.read(&mut chunk).await? {
            0 => break,
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(buf)
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

/// The value of header `name` in a response head.
fn header(head: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
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
    h.eq_ignore_ascii_case(from.host.unwrap_or("127.0.0.1"))
        .then_some((https, p, path))
}

/// The status code of an HTTP/1.x status line.
fn status_code(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
pub mod fake {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// Answers each exec probe by its command's first word from a table the test changes;
    /// records every run.
    #[derive(Default)]
    pub struct FakeProber {
        pub answers: Mutex<BTreeMap<String, Outcome>>,
        pub runs: Mutex<Vec<(String, String)>>,
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

    #[test]
    fn redirects_stay_on_the_host() {
        let head = b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\nLocation: /ok\r\n\r\n";
        assert_eq!(header(head, "location").as_deref(), Some("/ok"));
        assert_eq!(header(head, "x-missing"), None);
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
        let p = NetProber {
            runtime: Arc::new(crate::agent::worker::fake::FakeRuntime::default()),
        };
        let target = Target {
            container_id: "c".into(),
            netns: None,
        };
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

    struct Health(health::health_check_response::ServingStatus);

    #[tonic::async_trait]
    impl health::health_server::Health for Health {
        async fn check(
            &self,
            req: tonic::Request<health::HealthCheckRequest>,
        ) -> Result<tonic::Response<health::HealthCheckResponse>, tonic::Status> {
            if req.get_ref().service == "unknown" {
                return Err(tonic::Status::not_found("unknown service"));
            }
            Ok(tonic::Response::new(health::HealthCheckResponse {
                status: self.0 as i32,
            }))
        }
    }

    /// A gRPC health server on loopback answering `status`; its port.
    async fn health_server(status: health::health_check_response::ServingStatus) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health::health_server::HealthServer::new(Health(status)))
                .serve_with_incoming(incoming),
        );
        port
    }

    #[tokio::test]
    async fn grpc_health_check_as_the_kubelet_calls_it() {
        use health::health_check_response::ServingStatus;
        let p = NetProber {
            runtime: Arc::new(crate::agent::worker::fake::FakeRuntime::default()),
        };
        let target = Target {
            container_id: "c".into(),
            netns: None,
        };
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
            Outcome::Failure(m) if m.contains("health rpc probe failed")
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

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 404 Not Found\r\nX: y"), Some(404));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    #[tokio::test]
    async fn http_and_tcp_on_the_host_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for answer in [
                "200 OK",
                "302 Found\r\nLocation: http://example.com/elsewhere",
                "500 Internal Server Error",
                "301 Moved Permanently\r\nLocation: /broken",
                "503 Service Unavailable",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
                let _ = s
                    .write_all(format!("HTTP/1.1 {answer}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
            seen
        });
        let p = NetProber {
            runtime: Arc::new(crate::agent::worker::fake::FakeRuntime::default()),
        };
        let target = Target {
            container_id: "c".into(),
            netns: None,
        };
        let http = Handler::Http {
            https: false,
            host: None,
            port,
            path: "/healthz".into(),
            headers: vec![("X-Probe".into(), "yes".into())],
        };
        let t = Duration::from_secs(2);
        assert_eq!(p.probe(&target, &http, t).await, Outcome::Success);
        assert_eq!(p.probe(&target, &http, t).await, Outcome::Success);
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
