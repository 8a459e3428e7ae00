//! Blobs into containerd's content store (with the labels its garbage collector follows) and
//! the image record; what is already there is read back instead of fetched.
use std::collections::HashMap;

use containerd_client::services::v1::snapshots::StatSnapshotRequest;
use containerd_client::services::v1::{
    CreateImageRequest, GetImageRequest, Image, Info, InfoRequest, ReadContentRequest,
    UpdateImageRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::Code;
use futures::StreamExt;
use oci_client::Reference;

use super::manifest::*;
use super::unpack::unpack;
use super::{grpc, json, malformed, Fetch, PullError, Result};
use crate::runtime::client::{Ctd, SNAPSHOTTER};
use crate::runtime::{ImageInfo, PulledImage};

const CHUNK: usize = 1 << 20;

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

pub(super) async fn snapshot_exists(ctd: &Ctd, key: &str) -> Result<bool> {
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

/// Everything of an image but its layers, fetched and verified.
pub(super) struct ImageDocs {
    /// The image record's name.
    pub(super) name: String,
    /// What the image record points at (an index or a manifest) and its bytes.
    pub(super) top: Desc,
    pub(super) top_bytes: Vec<u8>,
    /// Whether `top` is an index naming `manifest_desc`.
    pub(super) index: bool,
    pub(super) manifest_desc: Desc,
    pub(super) manifest_bytes: Vec<u8>,
    pub(super) manifest: Manifest,
    pub(super) config_bytes: Vec<u8>,
    pub(super) config: serde_json::Value,
    /// `containerd.io/distribution.source.<host>` = repository, for registry pulls.
    pub(super) source_label: Option<(String, String)>,
}

/// Where layer blobs come from.
pub(super) enum LayerSource<'a> {
    Remote(&'a Fetch, &'a Reference),
    Archive(&'a crate::runtime::archive::Archive),
}

/// Writes the blobs with their GC labels (children before the parents naming them), unpacks the
/// layers into the snapshot chain and records the image: shared by pulls and archive imports.
pub(super) async fn store_image(
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
