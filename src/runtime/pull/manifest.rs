//! Image references, media types, descriptors and the platform choice: what a pull reads from
//! manifests before it touches containerd (pure).
use std::collections::HashMap;

use containerd_client::types::Descriptor;
use oci_client::Reference;
use sha2::{Digest, Sha256};

use super::{malformed, PullError, Result};

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(super) const ACCEPTED: &[&str] = &[
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST,
];

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
    pub(super) fn from_json(v: &serde_json::Value) -> Result<Desc> {
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
    pub(super) fn to_ctd(&self) -> Descriptor {
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

pub(super) fn is_index(mt: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
