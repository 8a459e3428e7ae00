//! Certificates, as the server and the agent both need them: the server's CA (ECDSA P-256, as k3s
//! makes its own), the serving and client certificates it issues, certificate signing requests
//! (made by the agent, checked and signed by the server), and what either side reads out of a
//! certificate (subject, groups, validity, names, the CA pin). rcgen builds, x509-parser reads.
//!
//! Times are seconds since the epoch, given by the caller.
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber, SubjectPublicKeyInfo,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

use crate::core::credential::CaHash;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{what}: {source}")]
    Rcgen {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{what} is not PEM: {source}")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what} is not a valid X.509 structure: {message}")]
    X509 { what: &'static str, message: String },
    #[error("time {0} is out of range")]
    Time(i64),
}

fn rcgen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Rcgen { what, source }
}

fn x509_err(what: &'static str) -> impl FnOnce(String) -> PkiError {
    move |message| PkiError::X509 { what, message }
}

fn at(t: i64) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(t).map_err(|_| PkiError::Time(t))
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f; // a positive INTEGER
    SerialNumber::from_slice(&b)
}

/// A key and the certificate issued for it, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The certificate authority of one server.
pub struct Ca {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("hash", &self.hash().to_string())
            .finish()
    }
}

impl Ca {
    /// A new CA valid from `now` for `days`, named `daemonset-agent-ca@NOW` as k3s names its own.
    pub fn generate(now: i64, days: i64) -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(rcgen_err("generating the CA key"))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("daemonset-agent-ca@{now}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        params.not_before = at(now - 60)?;
        params.not_after = at(now + days * 86_400)?;
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_err("signing the CA certificate"))?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(rcgen_err("reading the CA key"))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|source| {
            PkiError::Pem {
                what: "the CA certificate",
                source,
            }
        })?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(rcgen_err("reading the CA certificate"))?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer,
        })
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The pin of this CA (what join tokens carry).
    pub fn hash(&self) -> CaHash {
        CertInfo::parse(&self.cert_der)
            .map(|i| i.spki_hash)
            .unwrap_or(CaHash([0; 32]))
    }

    /// A serving certificate for `names` (DNS names and IP addresses).
    pub fn issue_server(&self, names: &[String], from: i64, to: i64) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(rcgen_err("the serving certificate's names"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "daemonset-agent-server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, from, to)
    }

    /// A client certificate for user `cn` in `group` (its O), with a new key.
    pub fn issue_client(
        &self,
        cn: &str,
        group: &str,
        from: i64,
        to: i64,
    ) -> Result<Issued, PkiError> {
        self.issue(client_params(cn, group), from, to)
    }

    fn issue(&self, mut params: CertificateParams, from: i64, to: i64) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(rcgen_err("generating a key"))?;
        params.not_before = at(from)?;
        params.not_after = at(to)?;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_err("signing a certificate"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate for the key of a checked request (`Csr::parse` verified its
    /// signature), with the subject the request asked for (the caller decided it may have it)
    /// and the name of the record the server keeps of it ([`CertInfo::record`]).
    pub fn sign_client(
        &self,
        csr: &Csr,
        record: &str,
        from: i64,
        to: i64,
    ) -> Result<String, PkiError> {
        let group = csr.organizations.first().map(String::as_str).unwrap_or("");
        let mut params = client_params(&csr.common_name, group);
        let uri = format!("{RECORD_URI}{record}")
            .try_into()
            .map_err(rcgen_err("the record name"))?;
        params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign_request(params, csr, from, to)
    }

    /// Signs `params` (its usages set) for the key of `csr`, valid from `from` to `to`.
    fn sign_request(
        &self,
        mut params: CertificateParams,
        csr: &Csr,
        from: i64,
        to: i64,
    ) -> Result<String, PkiError> {
        params.not_before = at(from)?;
        params.not_after = at(to)?;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let public = SubjectPublicKeyInfo::from_der(&csr.spki_der)
            .map_err(rcgen_err("the request's public key"))?;
        let cert = params
            .signed_by(&public, &self.issuer)
            .map_err(rcgen_err("signing a certificate"))?;
        Ok(cert.pem())
    }

    /// A kubelet serving certificate for the key of a checked request: its subject and the DNS
    /// names and addresses it asks for (the caller decided it may have them), server auth only.
    pub fn sign_serving(&self, csr: &Csr, from: i64, to: i64) -> Result<String, PkiError> {
        let mut params = CertificateParams::new(csr.names.clone())
            .map_err(rcgen_err("the serving certificate's names"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, &csr.common_name);
        for o in &csr.organizations {
            params.distinguished_name.push(DnType::OrganizationName, o);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        self.sign_request(params, csr, from, to)
    }
}

fn serving_params(cn: &str, group: &str, names: &[String]) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(names.to_vec())
        .map_err(rcgen_err("the serving certificate's names"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, group);
    Ok(params)
}

/// A new key and a request for a serving certificate of user `cn` in `group` for `names` (DNS
/// names and IP addresses), both PEM: what a kubelet sends to `kubernetes.io/kubelet-serving`.
pub fn serving_request(
    cn: &str,
    group: &str,
    names: &[String],
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(rcgen_err("generating a key"))?;
    let csr = serving_params(cn, group, names)?
        .serialize_request(&key)
        .map_err(rcgen_err("making the signing request"))?;
    let pem = csr
        .pem()
        .map_err(rcgen_err("encoding the signing request"))?;
    Ok((key.serialize_pem(), pem))
}

/// A self-signed serving certificate (a kubelet's without a signer) for `names`.
pub fn self_signed_serving(
    cn: &str,
    group: &str,
    names: &[String],
    from: i64,
    to: i64,
) -> Result<Issued, PkiError> {
    let key = KeyPair::generate().map_err(rcgen_err("generating a key"))?;
    let mut params = serving_params(cn, group, names)?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = at(from)?;
    params.not_after = at(to)?;
    params.serial_number = Some(random_serial());
    let cert = params
        .self_signed(&key)
        .map_err(rcgen_err("signing a serving certificate"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A client certificate names the record the server keeps of it (the CSR it was issued for) in a
/// URI subject alternative name: the server looks the record up by it, and refuses the
/// certificate once the record is gone.
pub const RECORD_URI: &str = "urn:daemonset-agent:csr:";

fn client_params(cn: &str, group: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    if !group.is_empty() {
        params
            .distinguished_name
            .push(DnType::OrganizationName, group);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

/// A new key and a certificate signing request for user `cn` in group `group`, both PEM.
pub fn client_request(cn: &str, group: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(rcgen_err("generating a key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, group);
    let csr = params
        .serialize_request(&key)
        .map_err(rcgen_err("making the signing request"))?;
    let pem = csr
        .pem()
        .map_err(rcgen_err("encoding the signing request"))?;
    Ok((key.serialize_pem(), pem))
}

fn name_values(name: &X509Name<'_>, oid: &x509_parser::der_parser::Oid<'_>) -> Vec<String> {
    name.iter_by_oid(oid)
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect()
}

/// DNS names and IP addresses (as strings) into `names`, URIs into `uris`.
fn alt_names(general: &[GeneralName<'_>], names: &mut Vec<String>, uris: &mut Vec<String>) {
    for n in general {
        match n {
            GeneralName::DNSName(d) => names.push(d.to_string()),
            GeneralName::URI(u) => uris.push(u.to_string()),
            GeneralName::IPAddress(b) => {
                let ip = match b.len() {
                    4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                    _ => None,
                };
                names.extend(ip.map(|ip| ip.to_string()));
            }
            _ => {}
        }
    }
}

/// What is read out of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub common_name: String,
    /// The O values: a client certificate's groups.
    pub organizations: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    /// DNS names and IP addresses of the subjectAltName, as strings.
    pub names: Vec<String>,
    /// URIs of the subjectAltName.
    pub uris: Vec<String>,
    pub is_ca: bool,
    /// SHA-256 of the SubjectPublicKeyInfo (a CA's pin).
    pub spki_hash: CaHash,
    /// SHA-256 of the whole certificate (DER).
    pub fingerprint: [u8; 32],
}

impl CertInfo {
    pub fn parse(der: &[u8]) -> Result<CertInfo, PkiError> {
        let (_, x) = X509Certificate::from_der(der)
            .map_err(|e| x509_err("the certificate")(e.to_string()))?;
        let subject = x.subject();
        let (mut names, mut uris) = (Vec::new(), Vec::new());
        if let Ok(Some(san)) = x.subject_alternative_name() {
            alt_names(&san.value.general_names, &mut names, &mut uris);
        }
        Ok(CertInfo {
            common_name: name_values(subject, &x509_parser::oid_registry::OID_X509_COMMON_NAME)
                .into_iter()
                .next()
                .unwrap_or_default(),
            organizations: name_values(
                subject,
                &x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME,
            ),
            not_before: x.validity().not_before.timestamp(),
            not_after: x.validity().not_after.timestamp(),
            names,
            uris,
            is_ca: x.is_ca(),
            spki_hash: CaHash::of_spki(x.public_key().raw),
            fingerprint: Sha256::digest(der).into(),
        })
    }

    /// The name of the server's record of this client certificate.
    pub fn record(&self) -> Option<&str> {
        self.uris
            .iter()
            .find_map(|u| u.strip_prefix(RECORD_URI))
            .filter(|r| !r.is_empty())
    }

    /// The first certificate of a PEM text.
    pub fn parse_pem(pem: &str) -> Result<CertInfo, PkiError> {
        let der =
            CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|source| PkiError::Pem {
                what: "the certificate",
                source,
            })?;
        CertInfo::parse(&der)
    }
}

/// A certificate signing request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// Subject alternative names, extensions the request asks for beyond the subject: a client
    /// certificate for a node has none.
    pub has_extensions: bool,
    /// The DNS names and IP addresses its subjectAltName extension asks for (a serving
    /// certificate's).
    pub names: Vec<String>,
    /// Whether it asks for anything in its subjectAltName but DNS names and IP addresses.
    pub other_names: bool,
    spki_der: Vec<u8>,
}

impl Csr {
    /// Reads a PEM `CERTIFICATE REQUEST` and verifies its self-signature.
    pub fn parse(pem: &[u8]) -> Result<Csr, PkiError> {
        let der =
            CertificateSigningRequestDer::from_pem_slice(pem).map_err(|source| PkiError::Pem {
                what: "the certificate signing request",
                source,
            })?;
        let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
            .map_err(|e| x509_err("the certificate signing request")(e.to_string()))?;
        req.verify_signature()
            .map_err(|e| x509_err("the certificate signing request's signature")(e.to_string()))?;
        let info = &req.certification_request_info;
        let (mut names, mut uris) = (Vec::new(), Vec::new());
        let mut other_names = false;
        for ext in req.requested_extensions().into_iter().flatten() {
            match ext {
                x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) => {
                    other_names |= san
                        .general_names
                        .iter()
                        .any(|n| !matches!(n, GeneralName::DNSName(_) | GeneralName::IPAddress(_)));
                    alt_names(&san.general_names, &mut names, &mut uris);
                }
                _ => other_names = true,
            }
        }
        Ok(Csr {
            names,
            other_names,
            common_name: name_values(
                &info.subject,
                &x509_parser::oid_registry::OID_X509_COMMON_NAME,
            )
            .into_iter()
            .next()
            .unwrap_or_default(),
            organizations: name_values(
                &info.subject,
                &x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME,
            ),
            has_extensions: req
                .requested_extensions()
                .is_some_and(|mut e| e.next().is_some()),
            spki_der: info.subject_pki.raw.to_vec(),
        })
    }

    /// The subject's other attributes: a node's request carries CN and O only.
    pub fn subject_is(&self, cn: &str, group: &str) -> bool {
        self.common_name == cn && self.organizations == [group]
    }
}

/// Writes a file only its owner may read (keys, kubeconfigs, the store): a temporary file made with
/// mode 0600, synced, then renamed over `path`, so a reader never sees half of it.
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    // (a leftover of a crash keeps its mode when reopened: start from a new file)
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The certificates of a PEM text, in order.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PkiError::Pem {
            what: "the certificates",
            source,
        })
}

/// DER as PEM with `label` (`CERTIFICATE`), 64 characters a line.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_ca_issues_serving_and_client_certificates_that_read_back() {
        let ca = Ca::generate(NOW, 3650).unwrap();
        let again = Ca::from_pem(&ca.cert_pem, &ca.key_pem()).unwrap();
        assert_eq!(ca.hash(), again.hash(), "a CA reloads with the same pin");
        let info = CertInfo::parse(&ca.cert_der).unwrap();
        assert!(info.is_ca);
        assert!(info.common_name.starts_with("daemonset-agent-ca@"));

        let names = vec!["host-1".to_string(), "127.0.0.1".into(), "::1".into()];
        let server = again.issue_server(&names, NOW, NOW + 86_400).unwrap();
        let s = CertInfo::parse_pem(&server.cert_pem).unwrap();
        assert_eq!(s.names, names);
        assert_eq!((s.not_before, s.not_after), (NOW, NOW + 86_400));
        assert!(!s.is_ca);

        let (key, csr) = client_request("system:node:n1", "system:nodes").unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let req = Csr::parse(csr.as_bytes()).unwrap();
        assert!(req.subject_is("system:node:n1", "system:nodes"));
        assert!(!req.subject_is("system:node:n2", "system:nodes"));
        assert!(!req.has_extensions);
        let cert = ca.sign_client(&req, "csr-x1", NOW, NOW + 600).unwrap();
        let c = CertInfo::parse_pem(&cert).unwrap();
        assert_eq!(c.record(), Some("csr-x1"));
        assert_eq!(c.common_name, "system:node:n1");
        assert_eq!(c.organizations, ["system:nodes"]);
        assert_ne!(c.fingerprint, s.fingerprint);
    }

    #[test]
    fn serving_requests_carry_their_names_into_the_certificate() {
        let ca = Ca::generate(NOW, 3650).unwrap();
        let names = vec!["node-a".to_string(), "10.1.2.3".into()];
        let (key, pem) = serving_request("system:node:a", "system:nodes", &names).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let req = Csr::parse(pem.as_bytes()).unwrap();
        assert_eq!(req.names, names);
        assert!(!req.other_names);
        assert!(req.subject_is("system:node:a", "system:nodes"));
        let cert = CertInfo::parse_pem(&ca.sign_serving(&req, NOW, NOW + 60).unwrap()).unwrap();
        assert_eq!(cert.names, names);
        assert_eq!(cert.common_name, "system:node:a");
        let own =
            self_signed_serving("system:node:a", "system:nodes", &names, NOW, NOW + 60).unwrap();
        assert_eq!(CertInfo::parse_pem(&own.cert_pem).unwrap().names, names);
        // a client request asks for no names
        let (_, client) = client_request("system:node:a", "system:nodes").unwrap();
        assert!(Csr::parse(client.as_bytes()).unwrap().names.is_empty());
    }

    #[test]
    fn tampered_requests_are_refused() {
        let (_, csr) = client_request("system:node:n1", "system:nodes").unwrap();
        let der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap();
        let mut bytes = der.to_vec();
        // "n1" -> "n2" in the subject: the signature no longer covers it
        let pos = bytes
            .windows(14)
            .position(|w| w == b"system:node:n1")
            .unwrap();
        bytes[pos + 13] = b'2';
        let text = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes)
        );
        let err = Csr::parse(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");
        assert!(Csr::parse(b"not pem").is_err());
    }
}
