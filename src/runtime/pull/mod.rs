//! Pulling an image into containerd 1.6 without its Transfer service, as `ctr images pull` does
//! (containerd's pull.go, unpacker.go, images/handlers.go): resolve with the OCI distribution API,
//! write every blob with Content.Write under an expiring lease, set the GC reference labels, unpack
//! the layers into the overlayfs snapshot chain, and record the image.
//!
//! A present image (image record + every blob it needs + the top snapshot) is never fetched again:
//! `ensure` answers from containerd alone.
//!
//! The parts: [`manifest`] (references, media types, descriptors and the platform choice: pure),
//! [`credentials`] (the node's and pods' registry logins), [`content`] (blobs into containerd's
//! content store with their GC labels, and the image record), [`unpack`] (layers into the
//! snapshot chain); this file fetches from registries and archives and ties them together.
use std::path::Path;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;

use super::archive::ArchiveError;
use super::client::Ctd;
use super::{PulledImage, RuntimeError};

mod content;
mod credentials;
mod manifest;
mod unpack;

pub use content::read_content;
use content::{local_image, store_image, ImageDocs, LayerSource};
pub use credentials::{Credentials, CredentialsError};
pub use manifest::*;

/// What failed in a pull or an archive import. The registry's answer, containerd's status or the
/// parser's error is the cause; `RuntimeError::ImagePull` names the image around it.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("invalid reference: {0}")]
    Reference(String),
    #[error("{op} {what}")]
    Registry {
        op: &'static str,
        what: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("fetch {digest}")]
    Fetch {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("containerd {op} {what}")]
    Containerd {
        op: &'static str,
        what: String,
        #[source]
        source: tonic::Status,
    },
    #[error("write {0}: containerd ended the content stream")]
    StreamEnded(String),
    #[error("parse {what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("malformed {what}: {problem}")]
    Malformed { what: &'static str, problem: String },
    #[error("unsupported {what} {value}")]
    Unsupported { what: &'static str, value: String },
    #[error("{what} {digest} does not match its digest")]
    Mismatch { what: &'static str, digest: String },
    #[error("no manifest for linux/{0} in the index")]
    NoPlatform(&'static str),
    #[error("layer {layer} unpacked to {applied}, expected diffID {expected}")]
    DiffId {
        layer: String,
        applied: String,
        expected: String,
    },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("the archive reader's blocking task failed")]
    Blocking(#[source] tokio::task::JoinError),
}

type Result<T> = std::result::Result<T, PullError>;

fn grpc(op: &'static str, what: &str) -> impl FnOnce(tonic::Status) -> PullError {
    let what = what.to_string();
    move |source| PullError::Containerd { op, what, source }
}

fn json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| PullError::Json {
        what: what.to_string(),
        source,
    })
}

fn malformed(what: &'static str, problem: impl Into<String>) -> PullError {
    PullError::Malformed {
        what,
        problem: problem.into(),
    }
}

fn pull_err(image: &str) -> impl FnOnce(PullError) -> RuntimeError + '_ {
    move |source| RuntimeError::ImagePull {
        image: image.to_string(),
        source,
    }
}

/// The image named by `reference` if containerd has all of it (no registry access).
pub async fn local(ctd: &Ctd, reference: &str) -> super::Result<Option<PulledImage>> {
    let r = normalize(reference).map_err(pull_err(reference))?;
    local_image(ctd, &r.whole())
        .await
        .map_err(pull_err(reference))
}

/// Makes `reference` present: from containerd alone when it is there, else pulled.
pub async fn ensure(
    ctd: &Ctd,
    reference: &str,
    credentials: &Credentials,
) -> super::Result<PulledImage> {
    if let Some(img) = local(ctd, reference).await? {
        return Ok(img);
    }
    pull(ctd, reference, credentials).await
}

/// Pulls `reference` from its registry into containerd (always resolving it again) and unpacks it.
pub async fn pull(
    ctd: &Ctd,
    reference: &str,
    credentials: &Credentials,
) -> super::Result<PulledImage> {
    let r = normalize(reference).map_err(pull_err(reference))?;
    let lease = ctd
        .create_lease("dsa-pull", 24)
        .await
        .map_err(|s| pull_err(reference)(grpc("create lease", "dsa-pull")(s)))?;
    let res = pull_leased(ctd, &r, &lease, credentials).await;
    ctd.delete_lease(&lease).await;
    res.map_err(pull_err(reference))
}

struct Fetch {
    client: oci_client::Client,
    auth: RegistryAuth,
}

impl Fetch {
    fn new(r: &Reference, credentials: &Credentials) -> Fetch {
        let registry = r.resolve_registry().to_string();
        let protocol = if is_loopback_registry(&registry) {
            ClientProtocol::Http
        } else {
            ClientProtocol::HttpsExcept(vec![])
        };
        // reqwest (under oci-client) is built without a crypto provider: use ring, as kube does
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = oci_client::Client::new(ClientConfig {
            protocol,
            ..Default::default()
        });
        Fetch {
            client,
            auth: credentials.auth(&registry),
        }
    }

    async fn manifest(&self, r: &Reference) -> Result<(Vec<u8>, String)> {
        let (bytes, digest) = self
            .client
            .pull_manifest_raw(r, &self.auth, ACCEPTED)
            .await
            .map_err(|source| PullError::Registry {
                op: "resolve",
                what: r.whole(),
                source,
            })?;
        let actual = sha256_digest(&bytes);
        if r.digest().is_some_and(|d| d != actual) || (!digest.is_empty() && digest != actual) {
            return Err(PullError::Mismatch {
                what: "manifest",
                digest: r.digest().unwrap_or(&digest).to_string(),
            });
        }
        Ok((bytes.to_vec(), actual))
    }
}

async fn pull_leased(
    ctd: &Ctd,
    r: &Reference,
    lease: &str,
    credentials: &Credentials,
) -> Result<PulledImage> {
    let name = r.whole();
    let fetch = Fetch::new(r, credentials);
    let source_label = (
        format!(
            "containerd.io/distribution.source.{}",
            url_hostname(r.resolve_registry())
        ),
        r.repository().to_string(),
    );
    let (top_bytes, top_digest) = fetch.manifest(r).await?;
    let top: serde_json::Value = json(&top_digest, &top_bytes)?;
    let top_mt = manifest_media_type(&top);
    if !ACCEPTED.contains(&top_mt.as_str()) {
        return Err(PullError::Unsupported {
            what: "manifest media type",
            value: top_mt,
        });
    }

    // The index (if any) names the platform's manifest.
    let (manifest_bytes, manifest_desc, index_part) = if is_index(&top_mt) {
        let (_, d) = pick_platform(&top)?;
        let by_digest = Reference::with_digest(
            r.registry().to_string(),
            r.repository().to_string(),
            d.digest.clone(),
        );
        let (bytes, digest) = fetch.manifest(&by_digest).await?;
        if digest != d.digest {
            return Err(PullError::Mismatch {
                what: "manifest",
                digest: d.digest,
            });
        }
        (bytes, d, true)
    } else {
        let d = Desc {
            media_type: top_mt.clone(),
            digest: top_digest.clone(),
            size: top_bytes.len() as i64,
        };
        (top_bytes.clone(), d, false)
    };
    let manifest = parse_manifest(&json(&manifest_desc.digest, &manifest_bytes)?)?;

    // The config names the diffIDs, hence the snapshot chain.
    let config_bytes = match read_content(ctd, &manifest.config.digest).await? {
        Some(b) => b,
        None => {
            let mut buf = Vec::new();
            fetch
                .client
                .pull_blob(r, manifest.config.digest.as_str(), &mut buf)
                .await
                .map_err(|source| PullError::Registry {
                    op: "fetch config",
                    what: manifest.config.digest.clone(),
                    source,
                })?;
            buf
        }
    };
    if sha256_digest(&config_bytes) != manifest.config.digest {
        return Err(PullError::Mismatch {
            what: "config",
            digest: manifest.config.digest,
        });
    }
    let config: serde_json::Value = json(&manifest.config.digest, &config_bytes)?;
    let docs = ImageDocs {
        name,
        top: Desc {
            media_type: top_mt,
            digest: top_digest,
            size: top_bytes.len() as i64,
        },
        top_bytes,
        index: index_part,
        manifest_desc,
        manifest_bytes,
        manifest,
        config_bytes,
        config,
        source_label: Some(source_label),
    };
    let img = store_image(ctd, lease, &docs, &LayerSource::Remote(&fetch, r)).await?;
    tracing::info!(
        image = img.info.reference.as_str(),
        digest = img.info.digest.as_str(),
        "pulled image"
    );
    Ok(img)
}

/// Imports every image of an OCI layout tar archive (`index.json` + `blobs/`), as
/// `ctr images import` does: with the same content labels and unpacking as a pull. An image is
/// named by its `io.containerd.image.name` annotation, else `<base_name>:<ref.name>`.
pub async fn import_oci_archive(
    ctd: &Ctd,
    path: &Path,
    base_name: &str,
) -> super::Result<Vec<PulledImage>> {
    let what = path.display().to_string();
    let lease = ctd
        .create_lease("dsa-import", 24)
        .await
        .map_err(|s| pull_err(&what)(grpc("create lease", "dsa-import")(s)))?;
    let res = import_leased(ctd, path, base_name, &lease).await;
    ctd.delete_lease(&lease).await;
    res.map_err(pull_err(&what))
}

async fn import_leased(
    ctd: &Ctd,
    path: &Path,
    base_name: &str,
    lease: &str,
) -> Result<Vec<PulledImage>> {
    let p = path.to_path_buf();
    let archive = tokio::task::spawn_blocking(move || super::archive::Archive::open(&p))
        .await
        .map_err(PullError::Blocking)??;
    let index: serde_json::Value = json("index.json", &archive.file("index.json")?)?;
    let mut out = Vec::new();
    for entry in index["manifests"]
        .as_array()
        .ok_or_else(|| malformed("index.json", "no manifests"))?
    {
        let ann = &entry["annotations"];
        let name = if let Some(n) = ann["io.containerd.image.name"].as_str() {
            n.to_string()
        } else if let Some(tag) = ann["org.opencontainers.image.ref.name"].as_str() {
            if base_name.is_empty() {
                return Err(malformed(
                    "index.json",
                    format!("image {tag} has no full name and no base name was given"),
                ));
            }
            format!("{base_name}:{tag}")
        } else {
            return Err(malformed("index.json", "an image has no name annotation"));
        };
        let name = normalize(&name)?.whole();
        let mut top = Desc::from_json(entry)?;
        let top_bytes = archive.blob(&top.digest)?;
        let top_doc: serde_json::Value = json(&top.digest, &top_bytes)?;
        if top.media_type.is_empty() {
            top.media_type = manifest_media_type(&top_doc);
        }
        let index_part = is_index(&top.media_type);
        let (manifest_desc, manifest_bytes) = if index_part {
            let (_, d) = pick_platform(&top_doc)?;
            let b = archive.blob(&d.digest)?;
            (d, b)
        } else {
            (top.clone(), top_bytes.clone())
        };
        let manifest = parse_manifest(&json(&manifest_desc.digest, &manifest_bytes)?)?;
        let config_bytes = archive.blob(&manifest.config.digest)?;
        let config: serde_json::Value = json(&manifest.config.digest, &config_bytes)?;
        let docs = ImageDocs {
            name,
            top,
            top_bytes,
            index: index_part,
            manifest_desc,
            manifest_bytes,
            manifest,
            config_bytes,
            config,
            source_label: None,
        };
        let img = store_image(ctd, lease, &docs, &LayerSource::Archive(&archive)).await?;
        tracing::info!(
            image = img.info.reference.as_str(),
            digest = img.info.digest.as_str(),
            "imported image"
        );
        out.push(img);
    }
    Ok(out)
}
