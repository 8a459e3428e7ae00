//! The API server as a raw HTTP/1.1 client sees it: over TLS verified against the server's CA,
//! with a credential (the admin token of `DATA_DIR/admin.kubeconfig`, another token, a client
//! certificate, or none), so tests can send exactly the bytes they mean to.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Where a server is and how a test client authenticates to it.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub ca_pem: String,
    config: Arc<rustls::ClientConfig>,
    /// Sent as `Authorization: Bearer ...` when set.
    pub token: Option<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(ca_pem: &str, cert: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        None => b.with_no_client_auth(),
        Some((cert, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The CA (PEM) and the admin token of an admin kubeconfig the server wrote.
pub fn admin_credential(kubeconfig: &Path) -> (String, String) {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let v: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    let ca = v["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .expect("certificate-authority-data in the admin kubeconfig");
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca)
        .unwrap();
    let token = v["users"][0]["user"]["token"]
        .as_str()
        .expect("a token in the admin kubeconfig");
    (String::from_utf8(ca).unwrap(), token.to_string())
}

impl Endpoint {
    /// The server at `addr` as its admin: the credential of `DATA_DIR/admin.kubeconfig`.
    pub fn admin(addr: SocketAddr, data_dir: &Path) -> Endpoint {
        let (ca_pem, token) = admin_credential(&data_dir.join("admin.kubeconfig"));
        Endpoint {
            addr,
            config: tls_config(&ca_pem, None),
            ca_pem,
            token: Some(token),
        }
    }

    /// The same server, with another bearer token (None: no credential at all).
    pub fn with_token(&self, token: Option<&str>) -> Endpoint {
        Endpoint {
            addr: self.addr,
            ca_pem: self.ca_pem.clone(),
            config: tls_config(&self.ca_pem, None),
            token: token.map(str::to_string),
        }
    }

    /// The same server, authenticating with a client certificate (PEM) instead of a token.
    pub fn with_cert(&self, cert_pem: &str, key_pem: &str) -> Endpoint {
        Endpoint {
            addr: self.addr,
            ca_pem: self.ca_pem.clone(),
            config: tls_config(&self.ca_pem, Some((cert_pem, key_pem))),
            token: None,
        }
    }

    /// Sends `raw` (an HTTP/1.1 request; the `Authorization` header is added after the request
    /// line) over verified TLS; returns the status code and the body (read until the server
    /// closes). A connection refused or a failed handshake panics.
    pub fn http(&self, raw: &[u8]) -> (u16, String) {
        self.try_http(raw)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr))
    }

    /// [`Endpoint::http`], with a connection refused (a server that is down) as an error: a
    /// connection the server drops mid-answer reads as status 0.
    pub fn try_http(&self, raw: &[u8]) -> std::io::Result<(u16, String)> {
        let mut request = raw.to_vec();
        if let Some(t) = &self.token {
            let at = raw
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(raw.len(), |p| p + 2);
            let header = format!("Authorization: Bearer {t}\r\n");
            request.splice(at..at, header.into_bytes());
        }
        let name = ServerName::from(self.addr.ip());
        let conn = rustls::ClientConnection::new(self.config.clone(), name).unwrap();
        let tcp = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let _ = tls.write_all(&request);
        let _ = tls.flush();
        let mut buf = Vec::new();
        let _ = tls.read_to_end(&mut buf);
        Ok(parse_response(&buf))
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.http(Endpoint::get_request(path).as_bytes())
    }

    /// [`Endpoint::get`] of a server that may be down.
    pub fn try_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        self.try_http(Endpoint::get_request(path).as_bytes())
    }

    fn get_request(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    }

    /// A request with a JSON (or other `content_type`) body.
    pub fn send(&self, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
        self.http(Endpoint::send_request(method, path, content_type, body).as_bytes())
    }

    /// [`Endpoint::send`] to a server that may be down.
    pub fn try_send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        self.try_http(Endpoint::send_request(method, path, content_type, body).as_bytes())
    }

    fn send_request(method: &str, path: &str, content_type: &str, body: &str) -> String {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

/// Status code and body of a raw HTTP response (0 and the text when it is not one).
pub fn parse_response(buf: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}
