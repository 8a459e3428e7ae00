//! The names and labels a pod's containers carry in the runtime: containerd ids, sandbox and
//! pod labels, and reading a pod back from them.
use super::*;

/// containerd id of one incarnation of a container: readable when short enough, else hashed.
pub fn container_id(pod: &PodKey, container: &str, restart_count: u32) -> String {
    let id = format!(
        "{}_{}_{}_{}",
        pod.namespace, pod.name, container, restart_count
    );
    if id.len() <= 76 {
        return id;
    }
    let h = uuid_shaped(&format!("{}/{}/{container}", pod.namespace, pod.name));
    format!("{}_{}", &h[..23], restart_count)
}

/// SHA-256 of `input`, rendered as a UUID (8-4-4-4-12 hex digits): a stable id from a name.
pub fn uuid_shaped(input: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(input.as_bytes());
    let h = hex::encode(&d[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The plan's view of one of our containers.
pub fn observed(c: &ContainerStatus) -> Option<Observed> {
    let name = c.labels.get(labels::CONTAINER_NAME)?.clone();
    Some(Observed {
        id: c.id.clone(),
        name,
        restart_count: c
            .labels
            .get(labels::RESTART_COUNT)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        state: match c.state {
            TaskState::Created => State::Created,
            TaskState::Running { .. } => State::Running,
            TaskState::Stopped {
                exit_code,
                exited_at,
            } => State::Exited {
                code: exit_code,
                at_ms: exited_at.map(|s| s * 1000),
            },
        },
        created_ms: c.created_at * 1000,
    })
}

/// What the runtime needs to know of a pod's sandbox.
pub(super) fn pod_sandbox(d: &DesiredPod) -> PodSandbox {
    PodSandbox {
        uid: d.uid.clone(),
        namespace: d.key.namespace.clone(),
        name: d.key.name.clone(),
        host_network: d.spec.host_network.unwrap_or(false),
        host_ipc: d.spec.host_ipc.unwrap_or(false),
        labels: pod_labels(d),
        port_mappings: PortMapping::of(&d.spec),
    }
}

/// The labels of every container of the pod (and of its sandbox's record).
pub(super) fn pod_labels(d: &DesiredPod) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED_BY, labels::MANAGED_BY_VALUE.to_string()),
        (labels::POD_NAMESPACE, d.key.namespace.clone()),
        (labels::POD_NAME, d.key.name.clone()),
        (labels::POD_UID, d.uid.clone()),
        (GRACE_LABEL, d.grace_seconds().to_string()),
    ])
    .into_iter()
    .chain(d.owner.iter().flat_map(|o| {
        [
            (labels::DAEMONSET_NAMESPACE, o.namespace.clone()),
            (labels::DAEMONSET_NAME, o.name.clone()),
            (labels::DAEMONSET_UID, o.uid.clone()),
        ]
    }))
    .chain((!d.template_hash.is_empty()).then(|| (labels::TEMPLATE_HASH, d.template_hash.clone())))
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The pod a container belongs to, from its labels.
pub fn pod_key_of(c: &ContainerStatus) -> Option<PodKey> {
    Some(PodKey {
        namespace: c.labels.get(labels::POD_NAMESPACE)?.clone(),
        name: c.labels.get(labels::POD_NAME)?.clone(),
    })
}

/// The grace period an earlier agent labelled containers with (30 s when none says).
pub(super) fn grace_label(containers: &[ContainerStatus]) -> i64 {
    containers
        .iter()
        .find_map(|c| c.labels.get(GRACE_LABEL).and_then(|g| g.parse().ok()))
        .unwrap_or(plan::DEFAULT_GRACE_SECONDS)
}
