//! Layers into the overlayfs snapshot chain, as containerd's unpacker does.
use std::collections::HashMap;

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::ApplyRequest;
use containerd_client::tonic::Code;

use super::content::snapshot_exists;
use super::manifest::Desc;
use super::{grpc, PullError, Result};
use crate::runtime::client::{Ctd, SNAPSHOTTER};

/// Unpacks the layers into the snapshot chain, skipping the snapshots already there.
pub(super) async fn unpack(
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
