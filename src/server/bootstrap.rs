//! The cluster's shared secrets on etcd, as k3s keeps its bootstrap data in the datastore: the
//! CA (certificate and key), the ServiceAccount signing key and the admin kubeconfig's token,
//! one JSON value at the etcd key `/bootstrap/<prefix>` ([`Layout::bootstrap_key`]), through
//! the encryption transform as a Secret `kube-system/daemonset-agent-bootstrap` (so an
//! EncryptionConfiguration that covers `secrets` encrypts it at rest).
//!
//! The first replica stores what it has (the files of an earlier single server, else new
//! secrets) if nothing is there, in one compare-on-version-0 transaction; every replica then
//! uses what the store holds and writes it into its data directory (`tls/ca.crt`, `tls/ca.key`,
//! `service-account.key`, where `tls` and `auth::jwt` read them), so that two replicas starting
//! together end with one CA. Each replica still issues its own serving certificate (its own
//! names) from the shared CA. Join tokens and the admin token's record are Secrets in the store
//! already (`auth::tokens`): every replica sees them.
//!
//! Why no API user, the admin included, can read the value: as in k3s, it is not an object of
//! any resource (it lives beside the `/registry` prefix, never under it), so no verb reaches
//! it. kube-apiserver never serves its CA key or signing key either; an admin token can be
//! rotated, a leaked CA key cannot (it mints any identity until the CA is replaced). Reading it
//! takes etcd's own client credentials, which only the servers hold.
//!
//! SQLite (one server) keeps these as files in the data directory, as before.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::credential::Token;
use crate::pki::{self, Ca, PkiError};
use crate::server::auth::jwt::SigningKey;
use crate::server::auth::serviceaccount::KEY_FILE;
use crate::server::encryption::{EncryptionError, StorageKey, Transformer};
use crate::server::store::etcd::{EtcdBackend, EtcdOptions};
use crate::server::store::StoreError;
use crate::server::tls::{TlsFiles, CA_DAYS};

/// The Secret the shared secrets are encrypted as (for the EncryptionConfiguration).
pub const STORAGE_KEY: StorageKey<'static> = StorageKey {
    resource: "secrets",
    namespace: "kube-system",
    name: "daemonset-agent-bootstrap",
};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the cluster CA: {0}")]
    Ca(#[source] PkiError),
    #[error("the service account signing key: {0}")]
    SigningKey(String),
    #[error("the admin token of the shared secrets is not a token")]
    AdminToken,
    #[error("the shared secrets in etcd: {0}")]
    Store(#[source] StoreError),
    #[error("the shared secrets in etcd are not readable: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the shared secrets in etcd: {0}")]
    Transform(#[source] EncryptionError),
}

/// What every replica needs to serve any client.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    #[serde(rename = "ca.crt")]
    pub ca_cert: String,
    #[serde(rename = "ca.key")]
    pub ca_key: String,
    #[serde(rename = "service-account.key")]
    pub service_account_key: String,
    #[serde(rename = "admin-token")]
    pub admin_token: String,
}

impl std::fmt::Debug for Secrets {
    /// Never a key or the token: this may reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").finish_non_exhaustive()
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, BootstrapError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BootstrapError::File {
            what: "reading",
            path: path.into(),
            source,
        }),
    }
}

fn write(path: &Path, text: &str) -> Result<(), BootstrapError> {
    pki::write_private(path, text.as_bytes()).map_err(|source| BootstrapError::File {
        what: "writing",
        path: path.into(),
        source,
    })
}

impl Secrets {
    /// What this server would share: the files of `data_dir` where it has them (a single
    /// server moving to etcd keeps its CA and keys; `admin_token`: its kubeconfig's), new ones
    /// where not (`now`: seconds since the epoch).
    pub fn local_or_new(
        data_dir: &Path,
        admin_token: Option<&str>,
        now: i64,
    ) -> Result<Secrets, BootstrapError> {
        let files = TlsFiles::new(data_dir);
        let (ca_cert, ca_key) = match (
            read_optional(&files.ca_cert())?,
            read_optional(&files.ca_key())?,
        ) {
            (Some(cert), Some(key)) => (cert, key),
            _ => {
                let ca = Ca::generate(now, CA_DAYS).map_err(BootstrapError::Ca)?;
                (ca.cert_pem.clone(), ca.key_pem())
            }
        };
        let service_account_key = match read_optional(&data_dir.join(KEY_FILE))? {
            Some(pem) => pem,
            None => {
                let (_, der) = SigningKey::generate()
                    .map_err(|e| BootstrapError::SigningKey(e.to_string()))?;
                pki::pem("PRIVATE KEY", &der)
            }
        };
        let admin_token = admin_token
            .and_then(|t| Token::parse(t).ok())
            .unwrap_or_else(crate::server::auth::tokens::generate)
            .to_string();
        let secrets = Secrets {
            ca_cert,
            ca_key,
            service_account_key,
            admin_token,
        };
        secrets.check()?;
        Ok(secrets)
    }

    /// The CA, the signing key and the token parse.
    fn check(&self) -> Result<(), BootstrapError> {
        Ca::from_pem(&self.ca_cert, &self.ca_key).map_err(BootstrapError::Ca)?;
        SigningKey::from_pem(&self.service_account_key).map_err(BootstrapError::SigningKey)?;
        self.admin_token()?;
        Ok(())
    }

    pub fn admin_token(&self) -> Result<Token, BootstrapError> {
        Token::parse(&self.admin_token).map_err(|_| BootstrapError::AdminToken)
    }

    /// The value stored in etcd.
    pub fn to_storage(&self, transform: &dyn Transformer) -> Result<String, BootstrapError> {
        let text = serde_json::to_string(self).map_err(BootstrapError::Json)?;
        transform
            .transform_to_storage(STORAGE_KEY, text)
            .map_err(BootstrapError::Transform)
    }

    /// The secrets of a value stored in etcd.
    pub fn from_storage(
        transform: &dyn Transformer,
        stored: String,
    ) -> Result<Secrets, BootstrapError> {
        let text = transform
            .transform_from_storage(STORAGE_KEY, stored)
            .map_err(BootstrapError::Transform)?;
        let secrets: Secrets = serde_json::from_str(&text).map_err(BootstrapError::Json)?;
        secrets.check()?;
        Ok(secrets)
    }

    /// Writes the CA and the signing key where `tls` and `auth::jwt` read them. A CA that
    /// differs from the one there takes the serving certificate with it (issued again from
    /// this CA at load).
    pub fn write_files(&self, data_dir: &Path) -> Result<(), BootstrapError> {
        let files = TlsFiles::new(data_dir);
        std::fs::create_dir_all(&files.dir).map_err(|source| BootstrapError::File {
            what: "creating",
            path: files.dir.clone(),
            source,
        })?;
        let before = read_optional(&files.ca_cert())?;
        if before.as_deref().is_some_and(|c| c != self.ca_cert) {
            tracing::warn!(path = %files.ca_cert().display(), "the CA in the data directory is not the cluster's shared CA: replaced");
            for p in [files.server_cert(), files.server_key()] {
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(BootstrapError::File {
                            what: "removing",
                            path: p,
                            source,
                        })
                    }
                }
            }
        }
        write(&files.ca_key(), &self.ca_key)?;
        write(&files.ca_cert(), &self.ca_cert)?;
        write(&data_dir.join(KEY_FILE), &self.service_account_key)
    }
}

/// The cluster's shared secrets from etcd, stored there first from this server's
/// ([`Secrets::local_or_new`]) when none are; written into `data_dir`.
pub async fn share_on_etcd(
    opts: &EtcdOptions,
    transform: Arc<dyn Transformer>,
    data_dir: &Path,
    admin_token: Option<&str>,
    now: i64,
) -> Result<Secrets, BootstrapError> {
    let mine = Secrets::local_or_new(data_dir, admin_token, now)?;
    let backend = EtcdBackend::connect(opts, transform.clone())
        .await
        .map_err(BootstrapError::Store)?;
    let (stored, created) = backend
        .create_bootstrap(mine.to_storage(&*transform)?)
        .await
        .map_err(BootstrapError::Store)?;
    let shared = Secrets::from_storage(&*transform, stored)?;
    let ca = Ca::from_pem(&shared.ca_cert, &shared.ca_key).map_err(BootstrapError::Ca)?;
    if created {
        tracing::info!(ca = %ca.hash(), "stored the cluster's shared secrets in etcd");
    } else {
        tracing::info!(ca = %ca.hash(), "loaded the cluster's shared secrets from etcd");
    }
    shared.write_files(data_dir)?;
    Ok(shared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::encryption::Identity;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_new_server_makes_new_secrets_and_a_used_data_dir_shares_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = Secrets::local_or_new(dir.path(), None, NOW).unwrap();
        assert!(fresh.ca_cert.contains("BEGIN CERTIFICATE"));
        fresh.write_files(dir.path()).unwrap();
        let token = fresh.admin_token.clone();
        let again = Secrets::local_or_new(dir.path(), Some(&token), NOW).unwrap();
        assert_eq!(
            again, fresh,
            "the files and the kubeconfig's token are kept"
        );
        let other = Secrets::local_or_new(dir.path(), Some("not a token"), NOW).unwrap();
        assert_ne!(other.admin_token, token, "a damaged token is replaced");
        assert_eq!(other.ca_key, fresh.ca_key);
    }

    #[test]
    fn the_stored_value_round_trips_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Secrets::local_or_new(dir.path(), None, NOW).unwrap();
        let stored = s.to_storage(&Identity).unwrap();
        assert_eq!(Secrets::from_storage(&Identity, stored.clone()).unwrap(), s);
        let mut damaged = s.clone();
        damaged.service_account_key = damaged.service_account_key.replace("BEGIN", "BEGUN");
        let damaged = damaged.to_storage(&Identity).unwrap();
        assert!(matches!(
            Secrets::from_storage(&Identity, damaged),
            Err(BootstrapError::SigningKey(_))
        ));
        assert!(matches!(
            Secrets::from_storage(&Identity, "{}".into()),
            Err(BootstrapError::Json(_))
        ));
        assert_eq!(format!("{s:?}"), "Secrets { .. }");
    }

    #[test]
    fn another_ca_replaces_the_files_and_the_serving_certificate_goes() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::new(dir.path());
        let mine = Secrets::local_or_new(dir.path(), None, NOW).unwrap();
        mine.write_files(dir.path()).unwrap();
        std::fs::write(files.server_cert(), "old").unwrap();
        std::fs::write(files.server_key(), "old").unwrap();
        mine.write_files(dir.path()).unwrap();
        assert!(files.server_cert().exists(), "the same CA keeps it");
        let other = tempfile::tempdir().unwrap();
        let theirs = Secrets::local_or_new(other.path(), None, NOW).unwrap();
        theirs.write_files(dir.path()).unwrap();
        assert!(!files.server_cert().exists() && !files.server_key().exists());
        assert_eq!(
            std::fs::read_to_string(files.ca_cert()).unwrap(),
            theirs.ca_cert
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap(),
            theirs.service_account_key
        );
    }
}
