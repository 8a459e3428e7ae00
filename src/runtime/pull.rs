//! Pulling an image into containerd 1.6 without its Transfer service, as `ctr images pull` does
//! (containerd's pull.go, unpacker.go, images/handlers.go): resolve with the OCI distribution API,
//! write every blob with Content.Write under an expiring lease, set the GC reference labels, unpack
//! the layers into the overlayfs snapshot chain, and record the image.
//!
//! A present image (image record + every blob it needs + the top snapshot) is never fetched again:
//! `ensure` answers from containerd alone.
use std::collections::HashMap;
use std::path::Path;

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, GetImageRequest, Image, Info, InfoRequest,
    ReadContentRequest, UpdateImageRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor;
use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use sha2::{Digest, Sha256};

use super::archive::ArchiveError;
use super::client::{Ctd, SNAPSHOTTER};
use super::{ImageInfo, PulledImage, RuntimeError};

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

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ACCEPTED: &[&str] = &[
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST,
];
const CHUNK: usize = 1 << 20;

/// The canonical name of `reference` as containerd records it (`docker.io/library/busybox:latest`,
/// `127.0.0.1:5000/busybox:v1`).
pub fn normalize(reference: &str) -> Result<Reference> {
    let r = crate::core::reference::parse(reference).map_err(PullError::Reference)?;
    Ok(match (r.tag, r.digest) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(r.registry, r.repository, t, d),
        (None, Some(d)) => Reference::with_digest(r.registry, r.repository, d),
        (t, None) => Reference::with_tag(r.registry, r.repository, t.unwrap_or_default()),
    })
}

/// Whether the registry host is loopback (plain HTTP is used for those).
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// The host of `host[:port]` without port or IPv6 brackets, as Go's `url.Hostname()` (containerd
/// keys its distribution source labels by it).
pub fn url_hostname(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// `chain_0 = diff_0`, `chain_i = sha256("<chain_{i-1}> <diff_i>")`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}")))
            ),
        };
        out.push(next);
    }
    out
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The containerd/Go name of this machine's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

impl Desc {
    fn from_json(v: &serde_json::Value) -> Result<Desc> {
        let digest = v["digest"]
            .as_str()
            .ok_or_else(|| malformed("descriptor", "no digest"))?;
        if !digest.starts_with("sha256:") || digest.len() != 71 {
            return Err(PullError::Unsupported {
                what: "digest",
                value: digest.to_string(),
            });
        }
        Ok(Desc {
            media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
            digest: digest.to_string(),
            size: v["size"]
                .as_i64()
                .ok_or_else(|| malformed("descriptor", format!("{digest} has no size")))?,
        })
    }
    fn to_ctd(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: HashMap::new(),
        }
    }
}

/// The media type of a manifest document (its `mediaType`, else guessed from its shape).
pub fn manifest_media_type(v: &serde_json::Value) -> String {
    match v["mediaType"].as_str() {
        Some(m) => m.to_string(),
        None if v.get("manifests").is_some() => MT_OCI_INDEX.to_string(),
        None => MT_OCI_MANIFEST.to_string(),
    }
}

fn is_index(mt: &str) -> bool {
    mt == MT_OCI_INDEX || mt == MT_DOCKER_LIST
}

/// Picks linux/<host arch> from an index; returns (position in the index, descriptor).
pub fn pick_platform(index: &serde_json::Value) -> Result<(usize, Desc)> {
    let arch = host_arch();
    let manifests = index["manifests"]
        .as_array()
        .ok_or_else(|| malformed("index", "no manifests"))?;
    for (i, m) in manifests.iter().enumerate() {
        let p = &m["platform"];
        if p["os"].as_str() == Some("linux") && p["architecture"].as_str() == Some(arch) {
            return Ok((i, Desc::from_json(m)?));
        }
    }
    Err(PullError::NoPlatform(arch))
}

/// A parsed image manifest.
pub struct Manifest {
    pub config: Desc,
    pub layers: Vec<Desc>,
}

pub fn parse_manifest(v: &serde_json::Value) -> Result<Manifest> {
    let config = Desc::from_json(&v["config"])?;
    let layers = v["layers"]
        .as_array()
        .ok_or_else(|| malformed("manifest", "no layers"))?
        .iter()
        .map(Desc::from_json)
        .collect::<Result<Vec<_>>>()?;
    Ok(Manifest { config, layers })
}

/// The image config's `rootfs.diff_ids`.
pub fn diff_ids(config: &serde_json::Value) -> Result<Vec<String>> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| malformed("image config", "no rootfs.diff_ids"))?
        .iter()
        .map(|d| {
            d.as_str()
                .map(str::to_string)
                .ok_or_else(|| malformed("image config", format!("diff_id {d}")))
        })
        .collect()
}

fn pull_err(image: &str) -> impl FnOnce(PullError) -> RuntimeError + '_ {
    move |source| RuntimeError::ImagePull {
        image: image.to_string(),
        source,
    }
}

/// Reads a whole blob from containerd's content store; None if it is not there.
pub async fn read_content(ctd: &Ctd, digest: &str) -> Result<Option<Vec<u8>>> {
    let mut stream = match ctd
        .content()
        .read(ctd.req(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == Code::NotFound => return Ok(None),
        Err(s) => return Err(grpc("read content", digest)(s)),
    };
    let mut out = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(m)) => out.extend_from_slice(&m.data),
            Ok(None) => break,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(grpc("read content", digest)(s)),
        }
    }
    Ok(Some(out))
}

async fn read_json(ctd: &Ctd, digest: &str) -> Result<Option<serde_json::Value>> {
    match read_content(ctd, digest).await? {
        None => Ok(None),
        Some(b) => json(digest, &b).map(Some),
    }
}

async fn snapshot_exists(ctd: &Ctd, key: &str) -> Result<bool> {
    match ctd
        .snapshots()
        .stat(ctd.req(StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: key.to_string(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(grpc("stat snapshot", key)(s)),
    }
}

/// The image from containerd alone, if it is fully present (record, manifest, config, unpacked
/// top snapshot). Transfers nothing from any registry.
pub async fn local_image(ctd: &Ctd, name: &str) -> Result<Option<PulledImage>> {
    let image = match ctd
        .images()
        .get(ctd.req(GetImageRequest {
            name: name.to_string(),
        }))
        .await
    {
        Ok(r) => r.into_inner().image,
        Err(s) if s.code() == Code::NotFound => return Ok(None),
        Err(s) => return Err(grpc("get image", name)(s)),
    };
    let Some(target) = image.and_then(|i| i.target) else {
        return Ok(None);
    };
    let Some(top) = read_json(ctd, &target.digest).await? else {
        return Ok(None);
    };
    let manifest_doc = if is_index(&manifest_media_type(&top)) {
        let (_, d) = pick_platform(&top)?;
        match read_json(ctd, &d.digest).await? {
            Some(m) => m,
            None => return Ok(None),
        }
    } else {
        top
    };
    let manifest = parse_manifest(&manifest_doc)?;
    let Some(config) = read_json(ctd, &manifest.config.digest).await? else {
        return Ok(None);
    };
    let chain = chain_ids(&diff_ids(&config)?);
    let Some(chain_id) = chain.last().cloned() else {
        return Err(malformed("image config", "no layers"));
    };
    if !snapshot_exists(ctd, &chain_id).await? {
        return Ok(None);
    }
    Ok(Some(PulledImage {
        info: ImageInfo {
            reference: name.to_string(),
            digest: target.digest,
        },
        config: config["config"].clone(),
        chain_id,
    }))
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

/// The node's registry credentials: the `auths` of a docker config.json (what `docker login`
/// writes), by registry host: `{"auths": {"HOST[:PORT]": {"auth": "base64(user:password)"}}}`
/// or with `username` and `password`. Registries it does not name are pulled from anonymously.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    by_host: std::collections::BTreeMap<String, (String, String)>,
}

/// Why a credentials file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("read {}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {}: {problem}", path.display())]
    Parse {
        path: std::path::PathBuf,
        problem: String,
    },
}

/// A registry as config.json keys name it, as the host (and port) references resolve to:
/// `https://index.docker.io/v1/` and `docker.io` are Docker Hub's `index.docker.io`.
fn registry_key(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "docker.io" | "registry-1.docker.io" => "index.docker.io".to_string(),
        h => h.to_string(),
    }
}

impl Credentials {
    /// Reads a docker config.json.
    pub fn load(path: &Path) -> std::result::Result<Credentials, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Credentials::parse(&text).map_err(|problem| CredentialsError::Parse {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// Parses a docker config.json's text.
    pub fn parse(text: &str) -> std::result::Result<Credentials, String> {
        use base64::Engine as _;
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut by_host = std::collections::BTreeMap::new();
        for (key, entry) in v["auths"].as_object().into_iter().flatten() {
            let pair = match (entry["auth"].as_str(), entry["username"].as_str()) {
                (Some(auth), _) if !auth.is_empty() => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|e| format!("auths.{key}.auth: {e}"))?;
                    let raw = String::from_utf8_lossy(&raw).to_string();
                    let (u, p) = raw
                        .split_once(':')
                        .ok_or_else(|| format!("auths.{key}.auth is not user:password"))?;
                    (u.to_string(), p.to_string())
                }
                (_, Some(user)) => (
                    user.to_string(),
                    entry["password"].as_str().unwrap_or_default().to_string(),
                ),
                _ => return Err(format!("auths.{key}: neither auth nor username")),
            };
            by_host.insert(registry_key(key), pair);
        }
        Ok(Credentials { by_host })
    }

    /// These credentials, and `node`'s for the registries these do not name: a pod's
    /// imagePullSecrets take precedence over the node's, as the kubelet tries them first.
    pub fn over(&self, node: &Credentials) -> Credentials {
        let mut by_host = node.by_host.clone();
        by_host.extend(self.by_host.clone());
        Credentials { by_host }
    }

    /// The authentication for `registry` (as a reference resolves it).
    pub fn auth(&self, registry: &str) -> RegistryAuth {
        match self.by_host.get(&registry_key(registry)) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
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

/// Everything of an image but its layers, fetched and verified.
struct ImageDocs {
    /// The image record's name.
    name: String,
    /// What the image record points at (an index or a manifest) and its bytes.
    top: Desc,
    top_bytes: Vec<u8>,
    /// Whether `top` is an index naming `manifest_desc`.
    index: bool,
    manifest_desc: Desc,
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
    config_bytes: Vec<u8>,
    config: serde_json::Value,
    /// `containerd.io/distribution.source.<host>` = repository, for registry pulls.
    source_label: Option<(String, String)>,
}

/// Where layer blobs come from.
enum LayerSource<'a> {
    Remote(&'a Fetch, &'a Reference),
    Archive(&'a super::archive::Archive),
}

/// Writes the blobs with their GC labels (children before the parents naming them), unpacks the
/// layers into the snapshot chain and records the image: shared by pulls and archive imports.
async fn store_image(
    ctd: &Ctd,
    lease: &str,
    d: &ImageDocs,
    layers: &LayerSource<'_>,
) -> Result<PulledImage> {
    let diffs = diff_ids(&d.config)?;
    if diffs.len() != d.manifest.layers.len() {
        return Err(malformed(
            "image",
            format!(
                "manifest has {} layers but config has {} diff_ids",
                d.manifest.layers.len(),
                diffs.len()
            ),
        ));
    }
    let chain = chain_ids(&diffs);
    let top_chain = chain
        .last()
        .cloned()
        .ok_or_else(|| malformed("image config", "no layers"))?;
    let with_source = |mut labels: HashMap<String, String>| {
        if let Some((k, v)) = &d.source_label {
            labels.insert(k.clone(), v.clone());
        }
        labels
    };
    for (layer, diff) in d.manifest.layers.iter().zip(&diffs) {
        let labels = with_source(HashMap::from([(
            "containerd.io/uncompressed".to_string(),
            diff.clone(),
        )]));
        match layers {
            LayerSource::Remote(fetch, r) => {
                write_blob(ctd, lease, "layer", layer, Blob::Remote(fetch, r), labels).await?
            }
            LayerSource::Archive(a) => {
                let data = a.blob(&layer.digest)?;
                write_blob(ctd, lease, "layer", layer, Blob::Bytes(&data), labels).await?
            }
        }
    }
    let config_labels = with_source(HashMap::from([(
        format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
        top_chain.clone(),
    )]));
    let m = &d.manifest;
    write_blob(
        ctd,
        lease,
        "config",
        &m.config,
        Blob::Bytes(&d.config_bytes),
        config_labels,
    )
    .await?;
    let mut manifest_labels = with_source(HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        m.config.digest.clone(),
    )]));
    for (i, l) in m.layers.iter().enumerate() {
        manifest_labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.clone(),
        );
    }
    write_blob(
        ctd,
        lease,
        "manifest",
        &d.manifest_desc,
        Blob::Bytes(&d.manifest_bytes),
        manifest_labels,
    )
    .await?;
    if d.index {
        // ctr labels only the children its platform filter kept: here the one picked
        let index_labels = with_source(HashMap::from([(
            "containerd.io/gc.ref.content.m.0".to_string(),
            d.manifest_desc.digest.clone(),
        )]));
        write_blob(
            ctd,
            lease,
            "index",
            &d.top,
            Blob::Bytes(&d.top_bytes),
            index_labels,
        )
        .await?;
    }
    unpack(ctd, lease, &m.layers, &diffs, &chain).await?;
    create_image(ctd, lease, &d.name, d.top.clone()).await?;
    Ok(PulledImage {
        info: ImageInfo {
            reference: d.name.clone(),
            digest: d.top.digest.clone(),
        },
        config: d.config["config"].clone(),
        chain_id: top_chain,
    })
}

/// Images.Create, or Images.Update when the name exists (pointing it at `target`).
async fn create_image(ctd: &Ctd, lease: &str, name: &str, target: Desc) -> Result<()> {
    let image = Image {
        name: name.to_string(),
        labels: HashMap::new(),
        target: Some(target.to_ctd()),
        created_at: None,
        updated_at: None,
    };
    match ctd
        .images()
        .create(ctd.req_leased(
            CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            },
            Some(lease),
        ))
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == Code::AlreadyExists => {
            ctd.images()
                .update(ctd.req_leased(
                    UpdateImageRequest {
                        image: Some(image),
                        update_mask: None,
                        source_date_epoch: None,
                    },
                    Some(lease),
                ))
                .await
                .map_err(grpc("update image", name))?;
        }
        Err(s) => return Err(grpc("create image", name)(s)),
    }
    Ok(())
}

/// Where the bytes of a blob come from.
enum Blob<'a> {
    Bytes(&'a [u8]),
    /// Streamed from the registry of the reference.
    Remote(&'a Fetch, &'a Reference),
}

/// Writes one blob into the content store with `labels`. A blob already there only gets its
/// labels set.
async fn write_blob(
    ctd: &Ctd,
    lease: &str,
    kind: &str,
    desc: &Desc,
    data: Blob<'_>,
    labels: HashMap<String, String>,
) -> Result<()> {
    // Present: set the labels (as containerd's content writer does on AlreadyExists, we keep the
    // blob; the labels must still name its children for the garbage collector).
    if let Ok(info) = ctd
        .content()
        .info(ctd.req_leased(
            InfoRequest {
                digest: desc.digest.clone(),
            },
            Some(lease),
        ))
        .await
    {
        let mut info: Info = info.into_inner().info.unwrap_or_default();
        let mut paths = Vec::new();
        for (k, v) in labels {
            if info.labels.get(&k) != Some(&v) {
                paths.push(format!("labels.{k}"));
                info.labels.insert(k, v);
            }
        }
        if !paths.is_empty() {
            ctd.content()
                .update(ctd.req_leased(
                    UpdateRequest {
                        info: Some(info),
                        update_mask: Some(prost_types::FieldMask { paths }),
                    },
                    Some(lease),
                ))
                .await
                .map_err(grpc("label", &desc.digest))?;
        }
        return Ok(());
    }

    let reference = format!("{kind}-{}", desc.digest);
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(2);
    let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
    let send = |m: WriteContentRequest| {
        let tx = tx.clone();
        async move {
            tx.send(m)
                .await
                .map_err(|_| PullError::StreamEnded(desc.digest.clone()))
        }
    };
    send(WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: reference.clone(),
        total: desc.size,
        expected: desc.digest.clone(),
        ..Default::default()
    })
    .await?;
    let mut inbound = match ctd
        .content()
        .write(ctd.req_leased(outbound, Some(lease)))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
        Err(s) => return Err(grpc("write", &desc.digest)(s)),
    };
    let status = match inbound.message().await {
        Ok(Some(m)) => m,
        Ok(None) => return Err(PullError::StreamEnded(desc.digest.clone())),
        Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
        Err(s) => return Err(grpc("write", &desc.digest)(s)),
    };
    // A partial write left by an earlier attempt resumes at its offset.
    let mut offset = status.offset;
    let mut skip = offset as usize;
    let write_chunk = |data: Vec<u8>, at: i64| WriteContentRequest {
        action: WriteAction::Write as i32,
        r#ref: reference.clone(),
        offset: at,
        data,
        ..Default::default()
    };
    let wrote = |inbound_msg: std::result::Result<Option<_>, containerd_client::tonic::Status>| {
        match inbound_msg {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(PullError::StreamEnded(desc.digest.clone())),
            Err(s) => Err(grpc("write", &desc.digest)(s)),
        }
    };
    match data {
        Blob::Bytes(bytes) => {
            for chunk in bytes[skip.min(bytes.len())..].chunks(CHUNK) {
                send(write_chunk(chunk.to_vec(), offset)).await?;
                wrote(inbound.message().await)?;
                offset += chunk.len() as i64;
            }
        }
        Blob::Remote(fetch, r) => {
            let mut stream = fetch
                .client
                .pull_blob_stream(r, desc.digest.as_str())
                .await
                .map_err(|source| PullError::Registry {
                    op: "fetch",
                    what: desc.digest.clone(),
                    source,
                })?
                .stream;
            let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
            loop {
                let next = stream.next().await;
                let done = next.is_none();
                if let Some(piece) = next {
                    let piece = piece.map_err(|source| PullError::Fetch {
                        digest: desc.digest.clone(),
                        source,
                    })?;
                    let mut piece = &piece[..];
                    if skip > 0 {
                        let n = skip.min(piece.len());
                        piece = &piece[n..];
                        skip -= n;
                    }
                    buf.extend_from_slice(piece);
                }
                if buf.len() >= CHUNK || (done && !buf.is_empty()) {
                    let data = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK));
                    let n = data.len() as i64;
                    send(write_chunk(data, offset)).await?;
                    wrote(inbound.message().await)?;
                    offset += n;
                }
                if done {
                    break;
                }
            }
        }
    }
    send(WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: reference.clone(),
        total: desc.size,
        offset,
        expected: desc.digest.clone(),
        labels,
        ..Default::default()
    })
    .await?;
    drop(tx);
    match inbound.message().await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => Ok(()),
        Err(s) => Err(grpc("commit", &desc.digest)(s)),
    }
}

/// Unpacks the layers into the snapshot chain, skipping the snapshots already there.
async fn unpack(
    ctd: &Ctd,
    lease: &str,
    layers: &[Desc],
    diffs: &[String],
    chain: &[String],
) -> Result<()> {
    for i in 0..layers.len() {
        if snapshot_exists(ctd, &chain[i]).await? {
            continue;
        }
        let parent = if i == 0 {
            String::new()
        } else {
            chain[i - 1].clone()
        };
        let key = format!("extract-{} {}", uuid::Uuid::new_v4().simple(), chain[i]);
        let labels = HashMap::from([("containerd.io/snapshot.ref".to_string(), chain[i].clone())]);
        let mounts = ctd
            .snapshots()
            .prepare(ctd.req_leased(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: key.clone(),
                    parent,
                    labels,
                },
                Some(lease),
            ))
            .await
            .map_err(grpc("prepare snapshot", &chain[i]))?
            .into_inner()
            .mounts;
        // Ok(false): committed concurrently by someone else, whose snapshot is as good as ours
        let res = async {
            let applied = ctd
                .diff()
                .apply(ctd.req_leased(
                    ApplyRequest {
                        diff: Some(layers[i].to_ctd()),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    Some(lease),
                ))
                .await
                .map_err(grpc("apply layer", &layers[i].digest))?
                .into_inner()
                .applied
                .map(|d| d.digest)
                .unwrap_or_default();
            if applied != diffs[i] {
                return Err(PullError::DiffId {
                    layer: layers[i].digest.clone(),
                    applied,
                    expected: diffs[i].clone(),
                });
            }
            match ctd
                .snapshots()
                .commit(ctd.req_leased(
                    CommitSnapshotRequest {
                        snapshotter: SNAPSHOTTER.to_string(),
                        name: chain[i].clone(),
                        key: key.clone(),
                        // ctr commits without labels: the snapshot.ref label only marks the
                        // extraction in progress
                        labels: HashMap::new(),
                    },
                    Some(lease),
                ))
                .await
            {
                Ok(_) => Ok(true),
                Err(s) if s.code() == Code::AlreadyExists => Ok(false),
                Err(s) => Err(grpc("commit snapshot", &chain[i])(s)),
            }
        }
        .await;
        if !matches!(res, Ok(true)) {
            let _ = ctd
                .snapshots()
                .remove(ctd.req_leased(
                    RemoveSnapshotRequest {
                        snapshotter: SNAPSHOTTER.to_string(),
                        key,
                    },
                    Some(lease),
                ))
                .await;
            res?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_a_docker_config() {
        let c = Credentials::parse(
            r#"{"auths": {"127.0.0.1:5000": {"auth": "dXNlcjpwYTpzcw=="},
                "https://index.docker.io/v1/": {"username": "hub", "password": "pw"}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.auth("127.0.0.1:5000"),
            RegistryAuth::Basic("user".into(), "pa:ss".into())
        );
        assert_eq!(
            c.auth("index.docker.io"),
            RegistryAuth::Basic("hub".into(), "pw".into())
        );
        assert_eq!(
            c.auth("docker.io"),
            RegistryAuth::Basic("hub".into(), "pw".into())
        );
        assert_eq!(c.auth("quay.io"), RegistryAuth::Anonymous);
        let pod = Credentials::parse(
            r#"{"auths": {"127.0.0.1:5000": {"username": "pod", "password": "p"}, "quay.io": {"username": "q", "password": "r"}}}"#,
        )
        .unwrap();
        let merged = pod.over(&c);
        assert_eq!(
            merged.auth("127.0.0.1:5000"),
            RegistryAuth::Basic("pod".into(), "p".into())
        );
        assert_eq!(
            merged.auth("quay.io"),
            RegistryAuth::Basic("q".into(), "r".into())
        );
        assert_eq!(merged.auth("docker.io"), c.auth("docker.io"));
        for bad in [
            "{",
            r#"{"auths": {"r": {}}}"#,
            r#"{"auths": {"r": {"auth": "bm9jb2xvbg=="}}}"#,
        ] {
            assert!(Credentials::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Credentials::parse("{}").unwrap(), Credentials::default());
    }

    #[test]
    fn loopback_registries() {
        for (reg, want) in [
            ("127.0.0.1:5000", true),
            ("127.1.2.3", true),
            ("localhost:5000", true),
            ("localhost", true),
            ("[::1]:5000", true),
            ("docker.io", false),
            ("index.docker.io", false),
            ("10.0.0.1:5000", false),
            ("registry.local:443", false),
        ] {
            assert_eq!(is_loopback_registry(reg), want, "{reg}");
        }
    }

    #[test]
    fn hostnames() {
        for (reg, want) in [
            ("127.0.0.1:5000", "127.0.0.1"),
            ("docker.io", "docker.io"),
            ("[::1]:5000", "::1"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(url_hostname(reg), want);
        }
    }

    #[test]
    fn normalized_names() {
        for (input, want) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:v1", "docker.io/library/busybox:v1"),
            ("quay.io/x/y:1", "quay.io/x/y:1"),
            ("127.0.0.1:5000/busybox:v1", "127.0.0.1:5000/busybox:v1"),
            ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
        ] {
            assert_eq!(
                normalize(input).map(|r| r.whole()).ok().as_deref(),
                Some(want),
                "{input}"
            );
        }
        for bad in ["", "a b", "busybox@sha256:nothex", "busybox:bad:tag"] {
            assert!(
                matches!(normalize(bad), Err(PullError::Reference(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn chain_id_math() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], sha256_digest(b"sha256:aaaa sha256:bbbb"));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn platform_pick_and_media_types() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index = serde_json::json!({
            "manifests": [
                {"mediaType": MT_OCI_MANIFEST, "digest": d('a'), "size": 1,
                 "platform": {"os": "linux", "architecture": "s390x"}},
                {"mediaType": MT_OCI_MANIFEST, "digest": d('b'), "size": 2,
                 "platform": {"os": "linux", "architecture": host_arch()}},
            ]
        });
        assert_eq!(manifest_media_type(&index), MT_OCI_INDEX);
        let (pos, desc) = pick_platform(&index).unwrap();
        assert_eq!(
            (pos, desc.digest.as_str(), desc.size),
            (1, d('b').as_str(), 2)
        );
        let none = serde_json::json!({"manifests": [
            {"digest": d('a'), "size": 1, "platform": {"os": "windows", "architecture": "amd64"}}]});
        assert!(matches!(
            pick_platform(&none),
            Err(PullError::NoPlatform(a)) if a == host_arch()
        ));
        let manifest = serde_json::json!({"mediaType": MT_DOCKER_MANIFEST,
            "config": {"digest": d('c'), "size": 3}, "layers": [{"digest": d('e'), "size": 4}]});
        assert_eq!(manifest_media_type(&manifest), MT_DOCKER_MANIFEST);
        let m = parse_manifest(&manifest).unwrap();
        assert_eq!((m.config.size, m.layers.len()), (3, 1));
        assert!(matches!(
            parse_manifest(
                &serde_json::json!({"config": {"digest": "md5:x", "size": 1}, "layers": []})
            ),
            Err(PullError::Unsupported { what: "digest", value }) if value == "md5:x"
        ));
    }
}
