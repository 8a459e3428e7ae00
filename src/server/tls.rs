//! TLS for the API. At first start the server makes a CA and a serving certificate under
//! `DATA_DIR/tls/` (keys 0600) and reuses them after; the serving certificate is issued again when
//! a third of its life is left or when it lacks a name the server now answers to (checked at start
//! and every [`RENEW_CHECK`]), and the new one is served from the next handshake on through a
//! certificate resolver, without a restart.
//!
//! The acceptor asks every client for a certificate signed by the CA and does not require one
//! (kube-apiserver's `--client-ca-file`: tokens are the other way in); the verified certificate
//! travels with each request as a [`Peer`] for `auth` to read. A client that speaks plain HTTP to
//! this port gets Go's one-line 400 and the connection closed, as from kube-apiserver.
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::core::credential::needs_reissue;
use crate::pki::{self, Ca, CertInfo, PkiError};

/// The CA lives ten years, as kubeadm's and k3s's.
pub const CA_DAYS: i64 = 3650;
/// A serving certificate lives a year (kubeadm's), and is issued again with a third left.
pub const SERVING_DAYS: i64 = 365;
/// How often a running server looks at its serving certificate.
pub const RENEW_CHECK: Duration = Duration::from_secs(12 * 3600);
/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Pki {
        path: PathBuf,
        #[source]
        source: PkiError,
    },
    #[error("the serving certificate: {0}")]
    Rustls(#[source] rustls::Error),
    #[error("the client certificate verifier: {0}")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("the TLS handshake: {0}")]
    Handshake(#[source] std::io::Error),
    #[error("the TLS handshake took longer than {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    #[error("the client spoke plain HTTP to the TLS port")]
    PlainHttp,
}

/// The files of `DATA_DIR/tls/`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub dir: PathBuf,
}

impl TlsFiles {
    pub fn new(data_dir: &Path) -> TlsFiles {
        TlsFiles {
            dir: data_dir.join("tls"),
        }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

fn read(what: &'static str, path: &Path) -> Result<Option<String>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::File {
            what,
            path: path.into(),
            source,
        }),
    }
}

fn write(what: &'static str, path: &Path, text: &str) -> Result<(), TlsError> {
    pki::write_private(path, text.as_bytes()).map_err(|source| TlsError::File {
        what,
        path: path.into(),
        source,
    })
}

fn pki_err(path: &Path) -> impl FnOnce(PkiError) -> TlsError + '_ {
    move |source| TlsError::Pki {
        path: path.into(),
        source,
    }
}

/// The names the serving certificate must carry: the hostname, `localhost`, the loopback
/// addresses, the listen address (every address of the machine's interfaces when it listens on
/// all of them) and the operator's `--tls-san` names.
pub fn serving_names(listen: &[SocketAddr], extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |n: String| {
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    };
    if let Ok(h) = nix::unistd::gethostname() {
        add(h.to_string_lossy().to_lowercase());
    }
    add("localhost".into());
    add("127.0.0.1".into());
    add("::1".into());
    for addr in listen {
        if addr.ip().is_unspecified() {
            for ip in interface_addresses() {
                add(ip.to_string());
            }
        } else {
            add(addr.ip().to_string());
        }
    }
    for n in extra {
        add(n.trim().to_string());
    }
    names
}

fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return vec![];
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|s| {
            if let Some(v4) = s.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// The serving certificate of the moment.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The server's CA, its serving certificate and the acceptor that serves it.
pub struct ServerTls {
    pub ca: Arc<Ca>,
    pub files: TlsFiles,
    names: Vec<String>,
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("dir", &self.files.dir)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServerTls {
    /// Loads the CA and serving certificate from `data_dir/tls`, making what is missing, and
    /// issues a new serving certificate when the one there is due (`now`: seconds since the epoch).
    pub fn load_or_create(
        data_dir: &Path,
        names: Vec<String>,
        now: i64,
    ) -> Result<ServerTls, TlsError> {
        let files = TlsFiles::new(data_dir);
        std::fs::create_dir_all(&files.dir).map_err(|source| TlsError::File {
            what: "creating",
            path: files.dir.clone(),
            source,
        })?;
        let (ca_cert, ca_key) = (files.ca_cert(), files.ca_key());
        let ca = match (read("reading", &ca_cert)?, read("reading", &ca_key)?) {
            (Some(cert), Some(key)) => Ca::from_pem(&cert, &key).map_err(pki_err(&ca_cert))?,
            _ => {
                let ca = Ca::generate(now, CA_DAYS).map_err(pki_err(&ca_cert))?;
                write("writing", &ca_key, &ca.key_pem())?;
                write("writing", &ca_cert, &ca.cert_pem)?;
                tracing::info!(ca = %ca.hash(), path = %ca_cert.display(), "made the cluster CA");
                ca
            }
        };
        let provider = provider();
        let key = ServerTls::serving_key(&ca, &files, &names, now, &provider)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(key),
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der.clone()).map_err(TlsError::Rustls)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(TlsError::Verifier)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            ca: Arc::new(ca),
            files,
            names,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            provider,
        })
    }

    /// The serving key from the files, issued anew when missing, unreadable or due.
    fn serving_key(
        ca: &Ca,
        files: &TlsFiles,
        names: &[String],
        now: i64,
        provider: &CryptoProvider,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        let (cert, key) = (files.server_cert(), files.server_key());
        if let (Some(c), Some(k)) = (read("reading", &cert)?, read("reading", &key)?) {
            let signed_by_ca = || -> Option<Arc<CertifiedKey>> {
                let info = CertInfo::parse_pem(&c).ok()?;
                if needs_reissue(&info.names, names, info.not_before, info.not_after, now) {
                    return None;
                }
                certified(&c, &k, ca, provider).ok()
            };
            if let Some(key) = signed_by_ca() {
                return Ok(key);
            }
        }
        let issued = ca
            .issue_server(names, now - 60, now + SERVING_DAYS * 86_400)
            .map_err(pki_err(&cert))?;
        write("writing", &key, &issued.key_pem)?;
        write("writing", &cert, &issued.cert_pem)?;
        tracing::info!(path = %cert.display(), names = ?names, "issued the serving certificate");
        certified(&issued.cert_pem, &issued.key_pem, ca, provider)
    }

    /// Issues and serves a new serving certificate if the current one is due at `now`; returns
    /// whether it did.
    pub fn renew_if_due(&self, now: i64) -> Result<bool, TlsError> {
        let before = self.serving_certificate();
        let key = ServerTls::serving_key(&self.ca, &self.files, &self.names, now, &self.provider)?;
        let renewed = key.cert.first() != Some(&before);
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = key;
        Ok(renewed)
    }

    /// The serving certificate handshakes present now.
    pub fn serving_certificate(&self) -> CertificateDer<'static> {
        let key = self
            .resolver
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner());
        key.cert[0].clone()
    }

    /// The acceptor of this server's handshakes (the accept loop goes through [`ServerTls::accept`]).
    #[cfg(test)]
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The TLS side of an accepted connection: refuses plain HTTP with Go's answer, bounds the
    /// handshake, and reads the client's verified certificate.
    pub async fn accept(
        &self,
        stream: TcpStream,
    ) -> Result<(OneRecordWrites<TcpStream>, Peer), TlsError> {
        let mut first = [0u8; 1];
        let handshake = async {
            let n = stream.peek(&mut first).await.map_err(TlsError::Handshake)?;
            // a TLS record of type handshake (22) starts every ClientHello
            if n == 1 && first[0] != 0x16 {
                let mut stream = stream;
                let _ = stream
                    .write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                    .await;
                let _ = stream.shutdown().await;
                return Err(TlsError::PlainHttp);
            }
            self.acceptor
                .accept(stream)
                .await
                .map_err(TlsError::Handshake)
        };
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| TlsError::HandshakeTimeout)??;
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| {
                CertInfo::parse(der).ok().map(|info| {
                    Arc::new(ClientCert {
                        der: der.clone().into_owned(),
                        info,
                    })
                })
            });
        Ok((OneRecordWrites(tls), Peer { cert }))
    }
}

/// The server's side of a TLS connection as hyper writes to it: one slice per write.
///
/// rustls seals each write call into one record and copies the plaintext into that record's
/// buffer whether it comes in one slice or several; given several (a vectored write: hyper's
/// chunk size line, the watch event and the CRLF), `write_vectored` first collects the slices
/// into a `Vec` of its own, one allocation more per record: per watcher per event in a watch
/// fan-out. A stream that says it has no vectored writes makes hyper copy the parts into its
/// write buffer, which it keeps and reuses, and hand rustls one slice (hyper's own advice for
/// TLS, `http1_writev`). Still one record and one `write` to the socket per event.
#[derive(Debug)]
pub struct OneRecordWrites<IO>(pub TlsStream<IO>);

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for OneRecordWrites<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for OneRecordWrites<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    // (poll_write_vectored: the default, one slice at a time, for a caller that asks anyway)
    fn is_write_vectored(&self) -> bool {
        false
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A serving certificate and key as rustls serves them, with the CA after it in the chain (so a
/// joining agent sees the CA it pins).
fn certified(
    cert_pem: &str,
    key_pem: &str,
    ca: &Ca,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let path = PathBuf::from("server.crt");
    let mut chain = pki::certs_from_pem(cert_pem.as_bytes()).map_err(pki_err(&path))?;
    chain.truncate(1);
    chain.push(ca.cert_der.clone());
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| TlsError::Pki {
            path: "server.key".into(),
            source: PkiError::Pem {
                what: "the serving key",
                source,
            },
        })?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(TlsError::Rustls)
}

/// A client certificate the handshake verified against the CA.
#[derive(Debug)]
pub struct ClientCert {
    pub der: CertificateDer<'static>,
    pub info: CertInfo,
}

/// What the connection tells each of its requests (a request extension).
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// None: no client certificate, or a plain HTTP connection.
    pub cert: Option<Arc<ClientCert>>,
}

/// Looks at the serving certificate every [`RENEW_CHECK`] and renews it when due, until `stop`.
pub async fn renew_loop(tls: Arc<ServerTls>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(RENEW_CHECK);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                let now = chrono::Utc::now().timestamp();
                match tls.renew_if_due(now) {
                    Ok(true) => tracing::info!("renewed the serving certificate"),
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "renewing the serving certificate failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn names() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into()]
    }

    #[test]
    fn files_are_made_once_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = ServerTls::load_or_create(dir.path(), names(), NOW).unwrap();
        for f in [
            first.files.ca_cert(),
            first.files.ca_key(),
            first.files.server_cert(),
            first.files.server_key(),
        ] {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
        let again = ServerTls::load_or_create(dir.path(), names(), NOW + 86_400).unwrap();
        assert_eq!(first.ca.hash(), again.ca.hash(), "the CA is reused");
        assert_eq!(
            first.serving_certificate(),
            again.serving_certificate(),
            "a serving certificate that is not due is reused"
        );
        let mut more = names();
        more.push("api.example".into());
        let renamed = ServerTls::load_or_create(dir.path(), more, NOW + 86_400).unwrap();
        assert_ne!(first.serving_certificate(), renamed.serving_certificate());
        let info = CertInfo::parse(&renamed.serving_certificate()).unwrap();
        assert!(info.names.contains(&"api.example".to_string()));
    }

    #[test]
    fn a_due_serving_certificate_is_renewed_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ServerTls::load_or_create(dir.path(), names(), NOW).unwrap();
        let before = tls.serving_certificate();
        assert!(
            !tls.renew_if_due(NOW + 200 * 86_400).unwrap(),
            "not due yet"
        );
        assert_eq!(tls.serving_certificate(), before);
        assert!(
            tls.renew_if_due(NOW + 250 * 86_400).unwrap(),
            "a third left"
        );
        let after = CertInfo::parse(&tls.serving_certificate()).unwrap();
        assert_eq!(after.not_after, NOW + 250 * 86_400 + SERVING_DAYS * 86_400);
        assert_eq!(
            tls.ca.hash(),
            ServerTls::load_or_create(dir.path(), names(), NOW)
                .unwrap()
                .ca
                .hash()
        );
    }

    #[test]
    fn serving_names_hold_loopback_the_listen_address_and_extras() {
        let names = serving_names(
            &["10.9.8.7:6443".parse().unwrap()],
            &["api.example".into(), " 192.0.2.1 ".into()],
        );
        for want in [
            "localhost",
            "127.0.0.1",
            "::1",
            "10.9.8.7",
            "api.example",
            "192.0.2.1",
        ] {
            assert!(names.contains(&want.to_string()), "{want} in {names:?}");
        }
        let all = serving_names(&["0.0.0.0:6443".parse().unwrap()], &[]);
        assert!(!all.contains(&"0.0.0.0".to_string()));
    }
}
