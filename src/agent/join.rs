//! The node's own credential, the way a kubelet gets and keeps it (TLS bootstrap): with a join
//! token `sha256:CA-HASH::ID.SECRET` the agent connects to the server, checks the CA it presents
//! against the pin before sending anything (kubeadm's `--discovery-token-ca-cert-hash`), then asks
//! for a client certificate with a certificates.k8s.io/v1 CertificateSigningRequest
//! (`CN=system:node:NAME`, `O=system:nodes`, signer `kubernetes.io/kube-apiserver-client-kubelet`)
//! authenticated by the token; the server approves and signs it, and the agent reads it back from
//! `status.certificate`. Key, certificate and CA live under `STATE_DIR/pki` (0600); afterwards the
//! agent uses only that certificate, renews it with itself before it expires (at 70-90% of its
//! lifetime, as the kubelet) and swaps it into its TLS client while running.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::client::ConfigExt as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::servers::{Rotating, Servers, ServersError};
use crate::core::credential::{rotation_deadline, CaHash, JoinToken};
use crate::pki::{self, CertInfo, PkiError};

/// The signer of kubelets' client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// How long the agent waits for the server to sign its request.
const SIGN_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{server} is not an https://HOST:PORT URL")]
    Url { server: String },
    #[error("connecting to {server}")]
    Connect {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to join {server}: it presents CA {found}, but the join token pins CA {pinned} (a token of another server, or someone in between)")]
    WrongCa {
        server: String,
        pinned: CaHash,
        found: String,
    },
    #[error("the TLS handshake with {server} failed")]
    Handshake {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the node's key or certificate")]
    Pki(#[from] PkiError),
    #[error("the node's TLS client")]
    Tls(#[source] rustls::Error),
    #[error("the API client for {server}")]
    Client {
        server: String,
        #[source]
        source: kube::Error,
    },
    #[error("the API servers")]
    Servers(#[from] ServersError),
    #[error("no API server answered the join: {}", servers.join(", "))]
    NoServer {
        servers: Vec<String>,
        #[source]
        source: Box<JoinError>,
    },
    #[error("certificate signing request {name}")]
    Request {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the server refused certificate signing request {name}: {reason}")]
    Denied { name: String, reason: String },
    #[error("certificate signing request {name} was not signed within {}s (is the server's signer running?)", SIGN_WAIT.as_secs())]
    NotSigned { name: String },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where the node keeps its credential.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub dir: PathBuf,
}

impl NodeFiles {
    pub fn new(state_dir: &Path) -> NodeFiles {
        NodeFiles {
            dir: state_dir.join("pki"),
        }
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("node.crt")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("node.key")
    }
    /// A kubeconfig of the node's identity, for a person (`kubectl --kubeconfig ... auth whoami`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("node.kubeconfig")
    }

    fn read(path: &Path) -> Result<Option<String>, JoinError> {
        match std::fs::read_to_string(path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(JoinError::File {
                what: "reading",
                path: path.into(),
                source,
            }),
        }
    }

    fn write(&self, path: &Path, contents: &str) -> Result<(), JoinError> {
        use std::os::unix::fs::PermissionsExt;
        let file_err = |what| {
            move |source| JoinError::File {
                what,
                path: path.into(),
                source,
            }
        };
        std::fs::create_dir_all(&self.dir).map_err(file_err("creating the directory of"))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(file_err("making private the directory of"))?;
        pki::write_private(path, contents.as_bytes()).map_err(file_err("writing"))
    }
}

/// The credential on disk: CA, certificate and key (PEM), if all three are there.
struct Stored {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl Stored {
    fn load(files: &NodeFiles) -> Result<Option<Stored>, JoinError> {
        let (ca, cert, key) = (
            NodeFiles::read(&files.ca())?,
            NodeFiles::read(&files.cert())?,
            NodeFiles::read(&files.key())?,
        );
        Ok(match (ca, cert, key) {
            (Some(ca_pem), Some(cert_pem), Some(key_pem)) => Some(Stored {
                ca_pem,
                cert_pem,
                key_pem,
            }),
            _ => None,
        })
    }

    /// Usable for `node` with CA `pin` at `now`.
    fn usable(&self, node: &str, pin: &CaHash, now: i64) -> bool {
        let (Ok(ca), Ok(cert)) = (
            CertInfo::parse_pem(&self.ca_pem),
            CertInfo::parse_pem(&self.cert_pem),
        ) else {
            return false;
        };
        ca.spki_hash == *pin
            && cert.common_name == format!("system:node:{node}")
            && cert.not_after > now
            && PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).is_ok()
    }
}

/// The client certificate the TLS client presents: swapped on renewal, for new connections.
#[derive(Debug)]
struct NodeCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl NodeCert {
    fn certified(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, JoinError> {
        let chain = pki::certs_from_pem(cert_pem.as_bytes())?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| PkiError::Pem {
                what: "the node's key",
                source,
            })?;
        CertifiedKey::from_der(chain, key, &provider())
            .map(Arc::new)
            .map_err(JoinError::Tls)
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesClientCert for NodeCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// How a client authenticates.
enum Auth {
    /// The join token, to ask for a certificate.
    Bootstrap(String),
    Cert(Arc<NodeCert>),
}

/// A client of `servers` (one connector picks the server, [`Rotating`]) that trusts only
/// `ca_pem` and authenticates with `auth`.
fn api_client(servers: &Arc<Servers>, ca_pem: &str, auth: Auth) -> Result<kube::Client, JoinError> {
    let named = servers.urls().join(",");
    let client_err = |source| JoinError::Client {
        server: named.clone(),
        source,
    };
    // every request names the first server; the connector sends it to the current one
    let uri = servers.url(0).parse().map_err(|_| JoinError::Url {
        server: servers.url(0),
    })?;
    let mut config = kube::Config::new(uri);
    let mut roots = rustls::RootCertStore::empty();
    for c in pki::certs_from_pem(ca_pem.as_bytes())? {
        roots.add(c).map_err(JoinError::Tls)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(JoinError::Tls)?
        .with_root_certificates(roots);
    let tls = match auth {
        Auth::Bootstrap(token) => {
            config.auth_info.token = Some(token.into());
            builder.with_no_client_auth()
        }
        Auth::Cert(cert) => builder.with_client_cert_resolver(cert),
    };
    client_over(&config, tls, true, Some(servers)).map_err(client_err)
}

/// The agent's API client for `config` over `tls` (`https_only`: refuse a plain http:// URL),
/// for a joined node and for a kubeconfig alike. HTTP/2 when the server offers it (ALPN), as
/// the kubelet's client-go: every request and watch of the agent on one connection. Over
/// HTTP/1.1 each concurrent request (100 pods starting at once: their objects, tokens, events)
/// opened a TLS connection of its own, which the pool then kept: ~100 connections and their
/// buffers per agent (and per agent on the server), in the agent's resident memory long after.
pub(crate) fn client_over(
    config: &kube::Config,
    tls: rustls::ClientConfig,
    https_only: bool,
    servers: Option<&Arc<Servers>>,
) -> Result<kube::Client, kube::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // kube's own stack has these too: a dead server or path is noticed, also under a watch
    http.set_connect_timeout(Some(Duration::from_secs(30)));
    http.set_keepalive(Some(Duration::from_secs(30)));
    // HTTP/2 writes a request or an event in several frames: with Nagle on, each small write
    // after the first waits for the peer's delayed ACK (~40 ms on Linux) - kube's stack and
    // client-go set TCP_NODELAY for the same reason
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    let https = match https_only {
        true => https.https_only(),
        false => https.https_or_http(),
    };
    let https = https.enable_http1().enable_http2().wrap_connector(http);
    // one connection carries everything: a dead one is noticed by pings, not by a read timeout
    let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_timeout(Duration::from_secs(10));
    // several servers: the connector picks one for each dial ([`Rotating`])
    let Some(servers) = servers else {
        return Ok(kube::Client::new(
            tower::ServiceBuilder::new()
                .layer(config.base_uri_layer())
                .option_layer(config.auth_layer()?)
                .map_err(|e: hyper_util::client::legacy::Error| Box::new(e) as tower::BoxError)
                .service(builder.build(https)),
            config.default_namespace.clone(),
        ));
    };
    let http_client = builder.build(Rotating {
        inner: https,
        servers: servers.clone(),
    });
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .map_err(|e: hyper_util::client::legacy::Error| Box::new(e) as tower::BoxError)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

/// Checks the CA a server presents against `pin`; verifies the serving certificate with it.
#[derive(Debug)]
struct PinVerifier {
    pin: CaHash,
    provider: Arc<CryptoProvider>,
    /// The pinned CA (DER) once seen, or the hashes of what was presented instead.
    seen: Mutex<Option<Result<CertificateDer<'static>, Vec<CaHash>>>>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented: Vec<(CaHash, bool, &CertificateDer<'_>)> = std::iter::once(end_entity)
            .chain(intermediates)
            .filter_map(|c| CertInfo::parse(c).ok().map(|i| (i.spki_hash, i.is_ca, c)))
            .collect();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let Some((_, _, ca)) = presented.iter().find(|(h, _, _)| *h == self.pin) else {
            let cas: Vec<CaHash> = presented.iter().filter(|p| p.1).map(|p| p.0).collect();
            let named = if cas.is_empty() {
                presented.iter().map(|p| p.0).collect()
            } else {
                cas
            };
            *seen = Some(Err(named));
            return Err(rustls::Error::General(
                "the CA is not the pinned one".into(),
            ));
        };
        let ca = CertificateDer::from(ca.as_ref().to_vec());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, &[], server_name, ocsp, now)?;
        *seen = Some(Ok(ca));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The host and port of an `https://` URL.
fn host_port(server: &str) -> Result<(String, u16), JoinError> {
    let bad = || JoinError::Url {
        server: server.into(),
    };
    let uri: http::Uri = server.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("https") {
        return Err(bad());
    }
    let host = uri.host().ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), uri.port_u16().unwrap_or(443)))
}

/// Connects to `server` and returns the CA it presents (PEM) if its hash is `pin` and it signed
/// the serving certificate; sends nothing but the TLS handshake.
pub async fn pinned_ca(server: &str, pin: &CaHash) -> Result<String, JoinError> {
    let (host, port) = host_port(server)?;
    let name = ServerName::try_from(host.clone()).map_err(|_| JoinError::Url {
        server: server.into(),
    })?;
    let verifier = Arc::new(PinVerifier {
        pin: *pin,
        provider: provider(),
        seen: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(JoinError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| JoinError::Connect {
            server: server.into(),
            source,
        })?;
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    let seen = verifier
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match (handshake, seen) {
        (Ok(mut tls), Some(Ok(ca))) => {
            use tokio::io::AsyncWriteExt as _;
            let _ = tls.shutdown().await;
            Ok(pki::pem("CERTIFICATE", &ca))
        }
        (_, Some(Err(found))) => Err(JoinError::WrongCa {
            server: server.into(),
            pinned: *pin,
            found: if found.is_empty() {
                "no certificate".into()
            } else {
                found
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
        (Err(source), _) => Err(JoinError::Handshake {
            server: server.into(),
            source,
        }),
        (Ok(_), None) => Err(JoinError::Handshake {
            server: server.into(),
            source: std::io::Error::other("the server's certificate was not verified"),
        }),
    }
}

/// Asks `client`'s server for a client certificate of node `node`; returns key and certificate
/// (PEM) once signed.
pub async fn request_certificate(
    client: &kube::Client,
    node: &str,
) -> Result<(String, String), JoinError> {
    let (key_pem, csr_pem) = pki::client_request(&format!("system:node:{node}"), "system:nodes")?;
    let name = format!("node-csr-{node}-{}", csr_suffix());
    let usages = ["digital signature", "client auth"];
    let cert_pem = sign(client, &name, csr_pem, KUBELET_CLIENT_SIGNER, &usages).await?;
    Ok((key_pem, cert_pem))
}

/// Five random characters that make a CSR's name unique.
pub fn csr_suffix() -> String {
    use rand::Rng as _;
    (0..5)
        .map(|_| {
            let a = crate::core::credential::ALPHABET;
            a[rand::rng().random_range(0..a.len())] as char
        })
        .collect()
}

/// Creates CSR `name` for `csr_pem` with `signer` and `usages` and waits (at most
/// [`SIGN_WAIT`]) for the server to sign it: the certificate (PEM), or why not.
pub async fn sign(
    client: &kube::Client,
    name: &str,
    csr_pem: String,
    signer: &str,
    usages: &[&str],
) -> Result<String, JoinError> {
    let name = name.to_string();
    let csr = CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.into_bytes()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let api: kube::Api<CertificateSigningRequest> = kube::Api::all(client.clone());
    let request_err = |source| JoinError::Request {
        name: name.clone(),
        source,
    };
    api.create(&PostParams::default(), &csr)
        .await
        .map_err(request_err)?;
    // the server signs at once; the agent asks again until it has (a bootstrap token may get,
    // not watch)
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let deadline = tokio::time::Instant::now() + SIGN_WAIT;
    while tokio::time::Instant::now() < deadline {
        tick.tick().await;
        let got = api.get(&name).await.map_err(request_err)?;
        let status = got.status.unwrap_or_default();
        if let Some(c) = status.certificate.filter(|c| !c.0.is_empty()) {
            return Ok(String::from_utf8_lossy(&c.0).into_owned());
        }
        if let Some(c) = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| matches!(c.type_.as_str(), "Denied" | "Failed"))
        {
            return Err(JoinError::Denied {
                name,
                reason: c.message.or(c.reason).unwrap_or(c.type_),
            });
        }
    }
    Err(JoinError::NotSigned { name })
}

/// A joined node's API access: the client, and what renews its certificate.
pub struct Joined {
    pub client: kube::Client,
    /// The servers the client picks from (the heartbeat gives up a silent one).
    pub servers: Arc<Servers>,
    cert: Arc<NodeCert>,
    files: NodeFiles,
    node: String,
    server: String,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The node's API client of one server: [`connect_any`] with one.
pub async fn connect(
    server: &str,
    join: &JoinToken,
    node: &str,
    state_dir: &Path,
) -> Result<Joined, JoinError> {
    connect_any(&[server.to_string()], join, node, state_dir).await
}

/// The node's API client over `servers` (replicas of one control plane): from the credential
/// under `state_dir` if it is there and still valid for this node and CA, else by joining with
/// `join` first, through the first server (in order) that answers; the CA is pinned once and
/// then trusted on every server.
pub async fn connect_any(
    servers: &[String],
    join: &JoinToken,
    node: &str,
    state_dir: &Path,
) -> Result<Joined, JoinError> {
    let files = NodeFiles::new(state_dir);
    let servers = Servers::new(servers)?;
    let stored = match Stored::load(&files)? {
        Some(s) if s.usable(node, &join.ca, now()) => s,
        _ => {
            let (server, ca_pem) = pinned_ca_of_any(&servers, &join.ca).await?;
            tracing::info!(server, ca = %join.ca, node, "the server's CA matches the join token's pin; asking for the node's certificate");
            let bootstrap = api_client(&servers, &ca_pem, Auth::Bootstrap(join.token.to_string()))?;
            let (key_pem, cert_pem) = request_certificate(&bootstrap, node).await?;
            let stored = Stored {
                ca_pem,
                cert_pem,
                key_pem,
            };
            save(&files, &servers.url(0), &stored)?;
            tracing::info!(node, path = %files.cert().display(), "joined: the node has its own certificate");
            stored
        }
    };
    let cert = Arc::new(NodeCert {
        current: RwLock::new(NodeCert::certified(&stored.cert_pem, &stored.key_pem)?),
    });
    let client = api_client(&servers, &stored.ca_pem, Auth::Cert(cert.clone()))?;
    Ok(Joined {
        client,
        server: servers.url(0),
        servers,
        cert,
        files,
        node: node.into(),
    })
}

/// The pinned CA from the first server (in the rotation's order) that answers the handshake; a
/// server presenting another CA ends the join (someone in between, or another cluster).
async fn pinned_ca_of_any(
    servers: &Arc<Servers>,
    pin: &CaHash,
) -> Result<(String, String), JoinError> {
    let mut last = None;
    for i in servers.order() {
        let server = servers.url(i);
        let answer = tokio::time::timeout(super::servers::DIAL_TIMEOUT, pinned_ca(&server, pin))
            .await
            .unwrap_or_else(|_| {
                Err(JoinError::Connect {
                    server: server.clone(),
                    source: std::io::ErrorKind::TimedOut.into(),
                })
            });
        match answer {
            Ok(ca) => return Ok((server, ca)),
            Err(e @ (JoinError::Connect { .. } | JoinError::Handshake { .. })) => {
                tracing::warn!(server, error = %crate::runtime::chain(&e), "could not reach the API server to join; trying the next");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(JoinError::NoServer {
        servers: servers.urls(),
        source: Box::new(last.unwrap_or(JoinError::Servers(ServersError::Empty))),
    })
}

fn save(files: &NodeFiles, server: &str, s: &Stored) -> Result<(), JoinError> {
    files.write(&files.key(), &s.key_pem)?;
    files.write(&files.cert(), &s.cert_pem)?;
    files.write(&files.ca(), &s.ca_pem)?;
    files.write(&files.kubeconfig(), &node_kubeconfig(server, files))
}

fn node_kubeconfig(server: &str, files: &NodeFiles) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: daemonset-agent
  cluster:
    server: {server}
    certificate-authority: {}
contexts:
- name: node
  context:
    cluster: daemonset-agent
    user: node
current-context: node
users:
- name: node
  user:
    client-certificate: {}
    client-key: {}
",
        files.ca().display(),
        files.cert().display(),
        files.key().display()
    )
}

impl Joined {
    /// Renews the certificate when due (at 70-90% of its lifetime, jittered), with itself, for
    /// as long as the agent runs; a failed renewal is tried again a minute later.
    pub async fn keep_renewed(self) {
        use rand::Rng as _;
        loop {
            let current = NodeFiles::read(&self.files.cert())
                .ok()
                .flatten()
                .and_then(|pem| CertInfo::parse_pem(&pem).ok());
            let Some(info) = current else {
                tracing::error!(path = %self.files.cert().display(), "the node's certificate is gone: not renewing it");
                return;
            };
            let fraction = rand::rng().random_range(0.7..0.9);
            let due = rotation_deadline(info.not_before, info.not_after, fraction);
            let wait = u64::try_from(due - now()).unwrap_or(0);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            match self.renew().await {
                Ok(()) => tracing::info!(node = %self.node, "renewed the node's certificate"),
                Err(e) => {
                    tracing::warn!(node = %self.node, error = %crate::runtime::chain(&e), "renewing the node's certificate failed; trying again in a minute");
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            }
        }
    }

    /// Asks for a new certificate with the current one, stores it and presents it from the next
    /// connection on.
    pub async fn renew(&self) -> Result<(), JoinError> {
        let (key_pem, cert_pem) = request_certificate(&self.client, &self.node).await?;
        let ca_pem = NodeFiles::read(&self.files.ca())?.unwrap_or_default();
        let stored = Stored {
            ca_pem,
            cert_pem,
            key_pem,
        };
        self.cert
            .set(NodeCert::certified(&stored.cert_pem, &stored.key_pem)?);
        save(&self.files, &self.server, &stored)
    }
}
