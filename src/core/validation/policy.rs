//! Admission beyond the API's rules: the pod fields this node agent cannot honour, and what the
//! server's operator allows (privileged, hostPath).

use k8s_openapi::api::core::v1::PodSpec;

use super::*;

/// The fields of a pod spec at `path` that this node agent cannot honour (`core::support`): each a
/// `Forbidden` cause saying so, for the admission of Pods and DaemonSet templates.
pub fn validate_node_support(spec: Option<&PodSpec>, path: &str) -> Vec<FieldError> {
    spec.map(|s| crate::core::support::refusals(s, path))
        .unwrap_or_default()
}

/// What the server's operator allows in pod specs (`--allow-privileged`, `--allow-host-path`), and
/// what its admission adds to them (kube-apiserver's `--default-not-ready-toleration-seconds`,
/// `--default-unreachable-toleration-seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub allow_privileged: bool,
    pub allow_host_path: bool,
    /// The DefaultTolerationSeconds admission's seconds for the not-ready NoExecute taint.
    pub default_not_ready_toleration_seconds: i64,
    /// ... and for the unreachable NoExecute taint: how long a pod stays on a lost node.
    pub default_unreachable_toleration_seconds: i64,
}

impl Default for Policy {
    /// Both allowed, as k3s runs kube-apiserver: node agents (kube-proxy, log shippers) need them.
    fn default() -> Policy {
        Policy {
            allow_privileged: true,
            allow_host_path: true,
            default_not_ready_toleration_seconds:
                crate::core::nodehealth::DEFAULT_TOLERATION_SECONDS,
            default_unreachable_toleration_seconds:
                crate::core::nodehealth::DEFAULT_TOLERATION_SECONDS,
        }
    }
}

/// The server policy on a pod spec at `path` (`spec` of a Pod, `spec.template.spec` of a
/// DaemonSet): privileged containers and hostPath volumes refused, with kube-apiserver's wording
/// for the first (`Forbidden: disallowed by cluster policy`).
pub fn validate_policy(spec: Option<&PodSpec>, path: &str, policy: Policy) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = spec else {
        return errs;
    };
    if !policy.allow_privileged {
        let groups = [
            (
                "initContainers",
                spec.init_containers.as_deref().unwrap_or(&[]),
            ),
            ("containers", spec.containers.as_slice()),
        ];
        for (group, containers) in groups {
            for (i, c) in containers.iter().enumerate() {
                if c.security_context
                    .as_ref()
                    .and_then(|s| s.privileged)
                    .unwrap_or(false)
                {
                    errs.push(FieldError::forbidden(
                        &format!("{path}.{group}[{i}].securityContext.privileged"),
                        "disallowed by cluster policy",
                    ));
                }
            }
        }
    }
    if !policy.allow_host_path {
        for (i, v) in spec.volumes.iter().flatten().enumerate() {
            if v.host_path.is_some() {
                errs.push(FieldError::forbidden(
                    &format!("{path}.volumes[{i}].hostPath"),
                    "disallowed by cluster policy",
                ));
            }
        }
    }
    errs
}
