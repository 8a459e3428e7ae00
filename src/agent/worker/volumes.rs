//! The ConfigMaps, Secrets and tokens a pod's volumes carry, read and refreshed.
use super::*;

/// The objects the pod uses, now (an API error: the container waits as for a failed mount).
pub(super) async fn pod_objects(
    ctx: &Context,
    d: &DesiredPod,
    id: &str,
) -> Result<crate::runtime::configvol::PodObjects, RuntimeError> {
    let pod = PodRef {
        namespace: &d.key.namespace,
        name: &d.key.name,
        uid: &d.api_uid,
        spec: &d.spec,
    };
    ctx.objects
        .objects(&pod)
        .await
        .map_err(|e| RuntimeError::InvalidSpec {
            id: id.to_string(),
            source: crate::runtime::spec::SpecError::Mount(crate::runtime::chain(&e)),
        })
}

/// The running pod's configMap, secret and projected volumes brought up to date with their
/// objects (the kubelet's periodic remount; subPath mounts keep the file they mounted).
pub(super) async fn refresh_volumes(ctx: &Context, d: &DesiredPod, sandbox: &SandboxInfo) {
    use crate::runtime::configvol;
    let vols: Vec<_> = d
        .spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| configvol::is_config_volume(v))
        .collect();
    if vols.is_empty() {
        return;
    }
    let Ok(objects) = pod_objects(ctx, d, &d.key.name).await else {
        return;
    };
    let host_ips: Vec<String> = ctx.host_ip.clone().into_iter().collect();
    let facts = crate::runtime::downward::PodFacts {
        name: &d.key.name,
        namespace: &d.key.namespace,
        uid: &d.api_uid,
        labels: &d.labels,
        annotations: &d.annotations,
        spec: &d.spec,
        host_ips: &host_ips,
        pod_ips: if d.spec.host_network.unwrap_or(false) {
            &host_ips
        } else {
            &sandbox.ips
        },
        node: Default::default(),
    };
    let gid = d
        .spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    for vol in vols {
        let Ok(Some(files)) = configvol::volume_files(vol, &objects, &facts) else {
            continue;
        };
        let dir = sandbox.pod_dir.join("volumes").join(&vol.name);
        let name = vol.name.clone();
        let written =
            tokio::task::spawn_blocking(move || configvol::write_atomic(&dir, &files, gid)).await;
        match written {
            Ok(Ok(true)) => tracing::info!(volume = name.as_str(), "volume updated"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(volume = name.as_str(), error = %e, "volume update failed")
            }
            Err(e) => tracing::warn!(volume = name.as_str(), error = %e, "volume update failed"),
        }
    }
}
