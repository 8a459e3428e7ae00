//! The node API's certificates: the serving certificate (asked of the server with a
//! `kubernetes.io/kubelet-serving` CSR, as a kubelet with `serverTLSBootstrap`; self-signed when
//! no signer answers) and the cluster CA that client certificates must chain to.
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;

use super::NodeApiError;
use crate::agent::config::{ApiAccess, Config};
use crate::agent::join;
use crate::pki::{self, CertInfo};

pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// A serving certificate is asked for again when less than this part of its life is left.
const RENEW_FRACTION: f64 = 0.3;
/// A self-signed serving certificate's life.
const SELF_SIGNED_DAYS: i64 = 365;

/// The serving certificate and key (PEM), and whether the cluster CA signed it.
#[derive(Debug, Clone)]
pub struct Serving {
    pub cert_pem: String,
    pub key_pem: String,
    pub signed: bool,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The names the serving certificate carries: the host's name, the node's, and the address the
/// server dials (the listen address, or the host's when listening on all).
pub fn names(cfg: &Config) -> Vec<String> {
    let mut names = Vec::new();
    let mut add = |n: String| {
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    };
    if let Ok(h) = nix::unistd::gethostname() {
        add(h.to_string_lossy().to_lowercase());
    }
    add(cfg.node_name.clone());
    let ip = cfg.node_api_listen.ip();
    if ip.is_unspecified() {
        add(crate::runtime::cni::host_ip().unwrap_or_default());
    } else {
        add(ip.to_string());
    }
    names
}

/// The cluster CA, DER: the one the joined node pinned, or the kubeconfig's.
pub async fn cluster_ca(cfg: &Config) -> Result<Vec<CertificateDer<'static>>, NodeApiError> {
    match &cfg.api {
        ApiAccess::Join { .. } => {
            let path = crate::agent::join::NodeFiles::new(&cfg.state_dir).ca();
            let pem = std::fs::read(&path).map_err(|source| NodeApiError::File {
                path: path.clone(),
                source,
            })?;
            pki::certs_from_pem(&pem).map_err(|source| NodeApiError::Pki { path, source })
        }
        ApiAccess::Kubeconfig(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| NodeApiError::NoCa {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let c = kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| NodeApiError::NoCa {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let roots: Vec<CertificateDer<'static>> = c
                .root_cert
                .unwrap_or_default()
                .into_iter()
                .map(CertificateDer::from)
                .collect();
            if roots.is_empty() {
                return Err(NodeApiError::NoCa {
                    path: path.clone(),
                    reason: "it names no certificate authority".into(),
                });
            }
            Ok(roots)
        }
    }
}

fn files(state_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = crate::agent::join::NodeFiles::new(state_dir).dir;
    (dir.join("serving.crt"), dir.join("serving.key"))
}

/// The stored serving certificate, if it is for `names`, signed by one of `roots` and not due.
fn stored(state_dir: &Path, names: &[String], roots: &[CertificateDer<'_>]) -> Option<Serving> {
    let (cert, key) = files(state_dir);
    let cert_pem = std::fs::read_to_string(cert).ok()?;
    let key_pem = std::fs::read_to_string(key).ok()?;
    let info = CertInfo::parse_pem(&cert_pem).ok()?;
    let life = (info.not_after - info.not_before) as f64;
    let fresh = ((info.not_after - now()) as f64) > life * RENEW_FRACTION;
    let same_names = names.iter().all(|n| info.names.contains(n));
    if !fresh || !same_names || !signed_by(&cert_pem, roots) {
        return None;
    }
    Some(Serving {
        cert_pem,
        key_pem,
        signed: true,
    })
}

/// Whether the first certificate of `pem` is signed by one of `roots`.
fn signed_by(pem: &str, roots: &[CertificateDer<'_>]) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Some(der) = pki::certs_from_pem(pem.as_bytes())
        .ok()
        .and_then(|c| c.into_iter().next())
    else {
        return false;
    };
    let Ok((_, cert)) = X509Certificate::from_der(&der) else {
        return false;
    };
    roots.iter().any(|r| {
        X509Certificate::from_der(r)
            .is_ok_and(|(_, ca)| cert.verify_signature(Some(ca.public_key())).is_ok())
    })
}

/// The serving certificate: the stored one while it is good, else a new one signed by the
/// server (a CSR to `kubernetes.io/kubelet-serving`), else self-signed (logged: the server
/// will not trust it).
pub async fn obtain(
    client: &kube::Client,
    cfg: &Config,
    roots: &[CertificateDer<'_>],
) -> Result<Serving, NodeApiError> {
    let names = names(cfg);
    if let Some(s) = stored(&cfg.state_dir, &names, roots) {
        return Ok(s);
    }
    let signed = match request(client, &cfg.node_name, &names).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %crate::runtime::chain(&e), node = cfg.node_name.as_str(), "no signed serving certificate for the node API: serving a self-signed one, which the server does not trust");
            let t = now();
            let own = pki::self_signed_serving(
                &format!("system:node:{}", cfg.node_name),
                "system:nodes",
                &names,
                t - 60,
                t + SELF_SIGNED_DAYS * 86_400,
            )
            .map_err(|source| NodeApiError::Pki {
                path: files(&cfg.state_dir).0,
                source,
            })?;
            return Ok(Serving {
                cert_pem: own.cert_pem,
                key_pem: own.key_pem,
                signed: false,
            });
        }
    };
    let (cert, key) = files(&cfg.state_dir);
    if let Some(dir) = cert.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    for (path, text) in [(&key, &signed.key_pem), (&cert, &signed.cert_pem)] {
        pki::write_private(path, text.as_bytes()).map_err(|source| NodeApiError::File {
            path: path.clone(),
            source,
        })?;
    }
    tracing::info!(node = cfg.node_name.as_str(), names = ?names, "the server signed the node API's serving certificate");
    Ok(signed)
}

/// Asks the server to sign a serving certificate for `names`.
async fn request(
    client: &kube::Client,
    node: &str,
    names: &[String],
) -> Result<Serving, NodeApiError> {
    let cn = format!("system:node:{node}");
    let (key_pem, csr_pem) =
        pki::serving_request(&cn, "system:nodes", names).map_err(|source| NodeApiError::Pki {
            path: "serving.csr".into(),
            source,
        })?;
    let name = format!("node-serving-{node}-{}", join::csr_suffix());
    let usages = ["digital signature", "key encipherment", "server auth"];
    let cert_pem = join::sign(client, &name, csr_pem, KUBELET_SERVING_SIGNER, &usages)
        .await
        .map_err(NodeApiError::Sign)?;
    Ok(Serving {
        cert_pem,
        key_pem,
        signed: true,
    })
}
