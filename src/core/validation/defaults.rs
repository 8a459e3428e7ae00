//! Kubernetes' v1 defaulters for the kinds served here.

use k8s_openapi::api::apps::v1::{DaemonSet, ReplicaSet};
use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Kubernetes' defaults for a DaemonSet (updateStrategy, revisionHistoryLimit, pod template).
pub fn default_daemonset(ds: &mut DaemonSet) {
    let Some(spec) = ds.spec.as_mut() else {
        return;
    };
    let us = spec.update_strategy.get_or_insert_with(Default::default);
    let ty = us.type_.get_or_insert_with(|| "RollingUpdate".to_string());
    if ty == "RollingUpdate" {
        let ru = us.rolling_update.get_or_insert_with(Default::default);
        ru.max_unavailable.get_or_insert(IntOrString::Int(1));
        ru.max_surge.get_or_insert(IntOrString::Int(0));
    }
    spec.revision_history_limit.get_or_insert(10);
    if let Some(pod) = spec.template.spec.as_mut() {
        default_pod_spec(pod);
    }
}

/// Kubernetes' defaults for a ReplicaSet (replicas 1, pod template).
pub fn default_replicaset(rs: &mut ReplicaSet) {
    let Some(spec) = rs.spec.as_mut() else {
        return;
    };
    spec.replicas.get_or_insert(1);
    if let Some(pod) = spec.template.as_mut().and_then(|t| t.spec.as_mut()) {
        default_pod_spec(pod);
    }
}

/// SetDefaults_PodSpec and the container, port, volume and probe defaults under it.
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.security_context.get_or_insert_with(Default::default);
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    let host_network = spec.host_network == Some(true);
    let init = spec.init_containers.iter_mut().flatten();
    for c in spec.containers.iter_mut().chain(init) {
        default_container(c, host_network);
    }
    for v in spec.volumes.iter_mut().flatten() {
        if let Some(hp) = v.host_path.as_mut() {
            hp.type_.get_or_insert_with(String::new);
        }
        if let Some(cm) = v.config_map.as_mut() {
            cm.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = v.secret.as_mut() {
            s.default_mode.get_or_insert(0o644);
        }
    }
}

pub(super) fn default_container(c: &mut Container, host_network: bool) {
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
    if c.image_pull_policy.is_none() {
        let policy = default_pull_policy(c.image.as_deref().unwrap_or(""));
        c.image_pull_policy = Some(policy.into());
    }
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        if host_network && p.host_port.unwrap_or(0) == 0 {
            p.host_port = Some(p.container_port);
        }
    }
    for probe in [
        c.liveness_probe.as_mut(),
        c.readiness_probe.as_mut(),
        c.startup_probe.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
}

/// SetDefaults_Probe: Go's zero values count as unset, so an explicit 0 is defaulted too.
pub(super) fn default_probe(p: &mut Probe) {
    for (field, default) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.unwrap_or(0) == 0 {
            *field = Some(default);
        }
    }
    if let Some(h) = p.http_get.as_mut() {
        h.path.get_or_insert_with(|| "/".into());
        h.scheme.get_or_insert_with(|| "HTTP".into());
    }
}

/// `Always` when the image has no digest and its tag is `latest` or missing, else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() && tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}
