//! What this node agent does with each field of a v1 PodSpec and Container: honoured (mapped to
//! the container's OCI spec, the pod sandbox or the pod status, each with the test that proves
//! it), accepted with a meaning of its own on one node (a scheduler hint with no scheduler to
//! read it), or refused. Refused fields are refused when the object is written (`refusals`, called
//! by the server's admission for Pods and DaemonSet templates) and again before a container is
//! created (a pod bound to this node by another API server): a field the node cannot honour is
//! never accepted and silently dropped.
//!
//! The tables are data: `src/server/kinds/pod.rs` walks the PodSpec and Container schemas the
//! server serves and checks that every field is listed here, and that the test each honoured field
//! names exists; the README's table is written from them.
use serde_json::Value;

use crate::core::validation::FieldError;

/// How one field is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Honoured, the whole field; `test` names the test function that proves it.
    Honoured { test: &'static str },
    /// Accepted with this meaning on one node (nothing for the node to do).
    Accepted { why: &'static str },
    /// Refused when set to anything but one of `unless` (values that ask for nothing: `false`, the
    /// default); `why` says what is missing.
    Refused {
        unless: &'static [&'static str],
        why: &'static str,
    },
    /// Honoured for these values (strings, or `true`/`false`), refused for any other.
    Values {
        honoured: &'static [&'static str],
        test: &'static str,
    },
    /// A map whose keys are honoured when listed, refused otherwise (resource names).
    Keys {
        honoured: &'static [&'static str],
        test: &'static str,
    },
    /// The field is an object (or a list of objects): its fields are listed one by one.
    Inside,
    /// A list of containers whose fields are [`CONTAINER`]'s, honoured as the `test` proves
    /// (`initContainers`: each field honoured or refused as in `containers[]`).
    Containers { test: &'static str },
}

use Rule::*;

const NO_SCHEDULER: &str = "a scheduler's input; this node runs the pods bound to it";
const NO_API_OBJECTS: &str =
    "needs API objects this server does not serve (ConfigMaps, Secrets, volumes, claims)";

/// The fields of a PodSpec, by path (`a.b` inside objects, `a[].b` inside lists of objects).
/// Container fields are [`CONTAINER`]'s, under `containers[]`.
pub const POD_SPEC: &[(&str, Rule)] = &[
    ("activeDeadlineSeconds", Refused { unless: &[], why: "no deadline enforcement on the node" }),
    ("affinity", Inside),
    ("affinity.nodeAffinity", Honoured { test: "node_should_run_table" }),
    ("affinity.podAffinity", Refused { unless: &[], why: NO_SCHEDULER }),
    ("affinity.podAntiAffinity", Refused { unless: &[], why: NO_SCHEDULER }),
    ("automountServiceAccountToken", Honoured { test: "automount_adds_the_api_access_volume_and_pull_secrets" }),
    ("containers", Inside),
    ("dnsConfig", Honoured { test: "dns_files_follow_the_kubelet" }),
    ("dnsPolicy", Honoured { test: "dns_files_follow_the_kubelet" }),
    ("enableServiceLinks", Accepted { why: "no Services are served: there are no service variables to inject" }),
    ("ephemeralContainers", Refused { unless: &[], why: "no ephemeral containers" }),
    ("hostAliases", Honoured { test: "dns_files_follow_the_kubelet" }),
    ("hostIPC", Honoured { test: "pod_namespaces" }),
    ("hostNetwork", Honoured { test: "host_network_shares_host_net_and_uts" }),
    ("hostPID", Honoured { test: "pod_namespaces" }),
    ("hostUsers", Refused { unless: &["true"], why: "no user namespaces" }),
    ("hostname", Honoured { test: "dns_files_follow_the_kubelet" }),
    ("imagePullSecrets", Honoured { test: "pull_credentials_of_image_pull_secrets" }),
    ("initContainers", Containers { test: "init_container_output_served_by_the_app_with_node_name_and_pod_ip" }),
    ("nodeName", Honoured { test: "node_should_run_table" }),
    ("nodeSelector", Honoured { test: "node_should_run_table" }),
    ("os", Inside),
    ("os.name", Values { honoured: &["linux"], test: "refusals_name_the_field" }),
    ("overhead", Refused { unless: &[], why: "no RuntimeClasses" }),
    ("preemptionPolicy", Accepted { why: NO_SCHEDULER }),
    ("priority", Accepted { why: NO_SCHEDULER }),
    ("priorityClassName", Accepted { why: NO_SCHEDULER }),
    ("readinessGates", Refused { unless: &[], why: "the agent owns the pod's conditions" }),
    ("resourceClaims", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("resources", Refused { unless: &[], why: "no pod-level resources" }),
    ("restartPolicy", Values { honoured: &["Always"], test: "refusals_name_the_field" }),
    ("runtimeClassName", Refused { unless: &[], why: "no RuntimeClasses" }),
    ("schedulerName", Accepted { why: NO_SCHEDULER }),
    ("schedulingGates", Refused { unless: &[], why: NO_SCHEDULER }),
    ("securityContext", Inside),
    ("securityContext.appArmorProfile", Refused { unless: &[], why: "no AppArmor" }),
    ("securityContext.fsGroup", Honoured { test: "groups_and_fs_group" }),
    ("securityContext.fsGroupChangePolicy", Accepted { why: "the volumes fsGroup applies to are made by the agent, owned by the group from the start" }),
    ("securityContext.runAsGroup", Honoured { test: "env_user_and_workdir" }),
    ("securityContext.runAsNonRoot", Honoured { test: "run_as_non_root_is_checked" }),
    ("securityContext.runAsUser", Honoured { test: "env_user_and_workdir" }),
    ("securityContext.seLinuxChangePolicy", Refused { unless: &[], why: "no SELinux" }),
    ("securityContext.seLinuxOptions", Refused { unless: &[], why: "no SELinux" }),
    ("securityContext.seccompProfile", Honoured { test: "seccomp_profiles" }),
    ("securityContext.supplementalGroups", Honoured { test: "groups_and_fs_group" }),
    ("securityContext.supplementalGroupsPolicy", Values { honoured: &["Merge"], test: "groups_and_fs_group" }),
    ("securityContext.sysctls", Honoured { test: "sysctls_are_checked" }),
    ("securityContext.windowsOptions", Refused { unless: &[], why: "Linux only" }),
    ("serviceAccount", Accepted { why: "the deprecated alias of serviceAccountName, which the ServiceAccount admission copies into it" }),
    ("serviceAccountName", Honoured { test: "field_refs_follow_the_kubelet" }),
    ("setHostnameAsFQDN", Refused { unless: &["false"], why: "no cluster domain" }),
    ("shareProcessNamespace", Honoured { test: "pod_namespaces" }),
    ("subdomain", Refused { unless: &[""], why: "no cluster DNS" }),
    ("terminationGracePeriodSeconds", Honoured { test: "sigterm_is_honoured_within_the_grace_and_sigkill_follows_when_ignored" }),
    ("tolerations", Honoured { test: "toleration_matching" }),
    ("topologySpreadConstraints", Refused { unless: &[], why: NO_SCHEDULER }),
    ("volumes", Inside),
    ("volumes[].name", Honoured { test: "volumes" }),
    ("volumes[].hostPath", Honoured { test: "host_path_types_as_the_kubelet_checks_them" }),
    ("volumes[].emptyDir", Inside),
    ("volumes[].emptyDir.medium", Values { honoured: &["", "Memory"], test: "volumes" }),
    ("volumes[].emptyDir.sizeLimit", Honoured { test: "volumes" }),
    ("volumes[].downwardAPI", Honoured { test: "downward_api_volume_files" }),
    ("volumes[].awsElasticBlockStore", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].azureDisk", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].azureFile", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].cephfs", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].cinder", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].configMap", Honoured { test: "volume_payloads_follow_make_payload" }),
    ("volumes[].csi", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].ephemeral", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].fc", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].flexVolume", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].flocker", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].gcePersistentDisk", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].gitRepo", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].glusterfs", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].image", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].iscsi", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].nfs", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].persistentVolumeClaim", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].photonPersistentDisk", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].portworxVolume", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].projected", Inside),
    ("volumes[].projected.defaultMode", Honoured { test: "volume_payloads_follow_make_payload" }),
    ("volumes[].projected.sources", Inside),
    ("volumes[].projected.sources[].configMap", Honoured { test: "volume_payloads_follow_make_payload" }),
    ("volumes[].projected.sources[].secret", Honoured { test: "volume_payloads_follow_make_payload" }),
    ("volumes[].projected.sources[].downwardAPI", Honoured { test: "volume_payloads_follow_make_payload" }),
    ("volumes[].projected.sources[].serviceAccountToken", Honoured { test: "sa_token_volume_is_mounted_verified_and_refreshed" }),
    ("volumes[].projected.sources[].clusterTrustBundle", Refused { unless: &[], why: "no ClusterTrustBundles are served" }),
    ("volumes[].quobyte", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].rbd", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].scaleIO", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].secret", Honoured { test: "volume_payloads_follow_make_payload" }),
    ("volumes[].storageos", Refused { unless: &[], why: NO_API_OBJECTS }),
    ("volumes[].vsphereVolume", Refused { unless: &[], why: NO_API_OBJECTS }),
];

/// The fields of a Container (in `containers[]`).
pub const CONTAINER: &[(&str, Rule)] = &[
    (
        "args",
        Honoured {
            test: "process_args_follow_kubernetes",
        },
    ),
    (
        "command",
        Honoured {
            test: "process_args_follow_kubernetes",
        },
    ),
    ("env", Inside),
    (
        "env[].name",
        Honoured {
            test: "env_user_and_workdir",
        },
    ),
    (
        "env[].value",
        Honoured {
            test: "variables_expand_as_the_kubelet_does",
        },
    ),
    ("env[].valueFrom", Inside),
    (
        "env[].valueFrom.fieldRef",
        Honoured {
            test: "field_refs_follow_the_kubelet",
        },
    ),
    (
        "env[].valueFrom.resourceFieldRef",
        Honoured {
            test: "resource_field_refs_default_to_the_node",
        },
    ),
    (
        "env[].valueFrom.configMapKeyRef",
        Honoured {
            test: "env_follows_make_environment_variables",
        },
    ),
    (
        "env[].valueFrom.secretKeyRef",
        Honoured {
            test: "env_follows_make_environment_variables",
        },
    ),
    (
        "envFrom",
        Honoured {
            test: "env_follows_make_environment_variables",
        },
    ),
    (
        "image",
        Honoured {
            test: "run_with_limits_logs_stop_and_remove",
        },
    ),
    (
        "imagePullPolicy",
        Honoured {
            test: "pull_policies",
        },
    ),
    ("lifecycle", Inside),
    ("lifecycle.postStart", Inside),
    (
        "lifecycle.postStart.exec",
        Honoured {
            test: "post_start_writes_a_file_the_app_sees",
        },
    ),
    (
        "lifecycle.postStart.httpGet",
        Honoured {
            test: "hooks_fail_as_the_kubelet_says",
        },
    ),
    (
        "lifecycle.postStart.sleep",
        Honoured {
            test: "pre_stop_shares_the_grace_period",
        },
    ),
    (
        "lifecycle.postStart.tcpSocket",
        Refused {
            unless: &[],
            why: "deprecated; the kubelet does not run it either",
        },
    ),
    ("lifecycle.preStop", Inside),
    (
        "lifecycle.preStop.exec",
        Honoured {
            test: "pre_stop_runs_before_sigterm",
        },
    ),
    (
        "lifecycle.preStop.httpGet",
        Honoured {
            test: "http_pre_stop_reaches_the_pod_before_sigterm",
        },
    ),
    (
        "lifecycle.preStop.sleep",
        Honoured {
            test: "pre_stop_shares_the_grace_period",
        },
    ),
    (
        "lifecycle.preStop.tcpSocket",
        Refused {
            unless: &[],
            why: "deprecated; the kubelet does not run it either",
        },
    ),
    (
        "lifecycle.stopSignal",
        Refused {
            unless: &[],
            why: "containers stop with SIGTERM",
        },
    ),
    (
        "livenessProbe",
        Honoured {
            test: "readiness_gates_ready_and_failed_liveness_restarts_the_container",
        },
    ),
    (
        "name",
        Honoured {
            test: "container_ids_are_valid_containerd_ids",
        },
    ),
    ("ports", Inside),
    (
        "ports[].containerPort",
        Accepted {
            why: "informational, as in Kubernetes: a pod's ports are open on its IP",
        },
    ),
    (
        "ports[].hostIP",
        Honoured {
            test: "port_mappings_of_host_ports",
        },
    ),
    (
        "ports[].hostPort",
        Honoured {
            test: "port_mappings_of_host_ports",
        },
    ),
    (
        "ports[].name",
        Accepted {
            why: "names a port for probes",
        },
    ),
    (
        "ports[].protocol",
        Honoured {
            test: "port_mappings_of_host_ports",
        },
    ),
    (
        "readinessProbe",
        Honoured {
            test: "readiness_gates_ready_and_failed_liveness_restarts_the_container",
        },
    ),
    (
        "resizePolicy",
        Refused {
            unless: &[],
            why: "no in-place resize",
        },
    ),
    ("resources", Inside),
    (
        "resources.claims",
        Refused {
            unless: &[],
            why: NO_API_OBJECTS,
        },
    ),
    (
        "resources.limits",
        Keys {
            honoured: &["cpu", "memory"],
            test: "resources",
        },
    ),
    (
        "resources.requests",
        Keys {
            honoured: &["cpu", "memory"],
            test: "resources",
        },
    ),
    (
        "restartPolicy",
        Values {
            honoured: &["Always"],
            test: "sidecar_init_container_runs_beside_the_app",
        },
    ),
    ("securityContext", Inside),
    (
        "securityContext.allowPrivilegeEscalation",
        Honoured {
            test: "security_context",
        },
    ),
    (
        "securityContext.appArmorProfile",
        Refused {
            unless: &[],
            why: "no AppArmor",
        },
    ),
    (
        "securityContext.capabilities",
        Honoured {
            test: "security_context",
        },
    ),
    (
        "securityContext.privileged",
        Honoured {
            test: "security_context",
        },
    ),
    (
        "securityContext.procMount",
        Honoured {
            test: "proc_mount_unmasked",
        },
    ),
    (
        "securityContext.readOnlyRootFilesystem",
        Honoured {
            test: "security_context",
        },
    ),
    (
        "securityContext.runAsGroup",
        Honoured {
            test: "env_user_and_workdir",
        },
    ),
    (
        "securityContext.runAsNonRoot",
        Honoured {
            test: "run_as_non_root_is_checked",
        },
    ),
    (
        "securityContext.runAsUser",
        Honoured {
            test: "env_user_and_workdir",
        },
    ),
    (
        "securityContext.seLinuxOptions",
        Refused {
            unless: &[],
            why: "no SELinux",
        },
    ),
    (
        "securityContext.seccompProfile",
        Honoured {
            test: "seccomp_profiles",
        },
    ),
    (
        "securityContext.windowsOptions",
        Refused {
            unless: &[],
            why: "Linux only",
        },
    ),
    (
        "startupProbe",
        Honoured {
            test: "startup_probe_holds_liveness_and_readiness",
        },
    ),
    (
        "stdin",
        Honoured {
            test: "kubectl_attach_sends_input_to_the_containers",
        },
    ),
    (
        "stdinOnce",
        Honoured {
            test: "kubectl_attach_sends_input_to_the_containers",
        },
    ),
    (
        "terminationMessagePath",
        Honoured {
            test: "termination_messages_reach_the_pod_status",
        },
    ),
    (
        "terminationMessagePolicy",
        Honoured {
            test: "termination_messages_reach_the_pod_status",
        },
    ),
    (
        "tty",
        Honoured {
            test: "kubectl_attach_sends_input_to_the_containers",
        },
    ),
    (
        "volumeDevices",
        Refused {
            unless: &[],
            why: NO_API_OBJECTS,
        },
    ),
    ("volumeMounts", Inside),
    ("volumeMounts[].mountPath", Honoured { test: "volumes" }),
    (
        "volumeMounts[].mountPropagation",
        Honoured {
            test: "mount_propagation_as_containerd_maps_it",
        },
    ),
    ("volumeMounts[].name", Honoured { test: "volumes" }),
    ("volumeMounts[].readOnly", Honoured { test: "volumes" }),
    (
        "volumeMounts[].recursiveReadOnly",
        Values {
            honoured: &["Disabled"],
            test: "refusals_name_the_field",
        },
    ),
    ("volumeMounts[].subPath", Honoured { test: "volumes" }),
    (
        "volumeMounts[].subPathExpr",
        Honoured {
            test: "variables_expand_as_the_kubelet_does",
        },
    ),
    (
        "workingDir",
        Honoured {
            test: "env_user_and_workdir",
        },
    ),
];

/// The rule of `path` in `table`, if listed.
pub fn rule(table: &[(&str, Rule)], path: &str) -> Option<Rule> {
    table.iter().find(|(p, _)| *p == path).map(|(_, r)| *r)
}

/// A JSON value as the tables spell values: a string as itself, anything else as JSON.
fn spelled(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every value at `path` (`a.b`, `a[].b`) under `v`, with its field path below `prefix`.
fn at<'a>(v: &'a Value, path: &str, prefix: &str, out: &mut Vec<(String, &'a Value)>) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let (name, list) = match head.strip_suffix("[]") {
        Some(n) => (n, true),
        None => (head, false),
    };
    let Some(field) = v.get(name).filter(|f| !f.is_null()) else {
        return;
    };
    let here = format!("{prefix}.{name}");
    match (list, rest) {
        (false, None) => out.push((here, field)),
        (false, Some(rest)) => at(field, rest, &here, out),
        (true, rest) => {
            for (i, item) in field.as_array().into_iter().flatten().enumerate() {
                let item_path = format!("{here}[{i}]");
                match rest {
                    Some(rest) => at(item, rest, &item_path, out),
                    None => out.push((item_path, item)),
                }
            }
        }
    }
}

/// What this node agent refuses in `spec` (at field path `path`: `spec`, or
/// `spec.template.spec`), as 422 causes naming each field.
pub fn refusals(spec: &k8s_openapi::api::core::v1::PodSpec, path: &str) -> Vec<FieldError> {
    let Ok(v) = serde_json::to_value(spec) else {
        return Vec::new();
    };
    let mut errs = Vec::new();
    let container_rules = CONTAINER.iter().flat_map(|(p, r)| {
        [
            (format!("containers[].{p}"), *r),
            (format!("initContainers[].{p}"), *r),
        ]
    });
    let rules = POD_SPEC
        .iter()
        .map(|(p, r)| (p.to_string(), *r))
        .chain(container_rules);
    for (rule_path, rule) in rules {
        let mut found = Vec::new();
        at(&v, &rule_path, path, &mut found);
        for (field, value) in found {
            match rule {
                Refused { unless, why } => {
                    if !unless.contains(&spelled(value).as_str()) && !is_empty(value) {
                        errs.push(FieldError::forbidden(
                            &field,
                            &format!("not supported by this node agent ({why})"),
                        ));
                    }
                }
                Values { honoured, .. } => {
                    let s = spelled(value);
                    if !honoured.contains(&s.as_str()) {
                        let list: Vec<String> = honoured
                            .iter()
                            .map(|h| crate::core::validation::q(h))
                            .collect();
                        errs.push(FieldError::forbidden(
                            &field,
                            &format!(
                                "{} is not supported by this node agent (supported: {})",
                                crate::core::validation::q(&s),
                                list.join(", ")
                            ),
                        ));
                    }
                }
                Keys { honoured, .. } => {
                    for key in value.as_object().into_iter().flat_map(|m| m.keys()) {
                        if !honoured.contains(&key.as_str()) {
                            errs.push(FieldError::forbidden(
                                &format!("{field}[{key}]"),
                                "not supported by this node agent (cpu and memory only)",
                            ));
                        }
                    }
                }
                Honoured { .. } | Accepted { .. } | Inside | Containers { .. } => {}
            }
        }
    }
    // emptyDir.sizeLimit is a tmpfs size; on disk the kubelet enforces it by eviction, which
    // this node agent does not do
    for (i, vol) in spec.volumes.iter().flatten().enumerate() {
        if let Some(ed) = &vol.empty_dir {
            if ed.size_limit.is_some() && ed.medium.as_deref() != Some("Memory") {
                errs.push(FieldError::forbidden(
                    &format!("{path}.volumes[{i}].emptyDir.sizeLimit"),
                    "not supported by this node agent (on disk; it is honoured with medium Memory)",
                ));
            }
        }
    }
    errs
}

/// The README's table of pod fields, from [`POD_SPEC`] and [`CONTAINER`] (the README holds it
/// verbatim; a test checks that it is the current one).
pub fn markdown_table() -> String {
    let quoted = |vs: &[&str]| {
        vs.iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from("| field | this node agent | proof / why |\n|---|---|---|\n");
    let rows = POD_SPEC.iter().map(|(p, r)| (p.to_string(), *r)).chain(
        CONTAINER
            .iter()
            .map(|(p, r)| (format!("containers[].{p}"), *r)),
    );
    for (path, rule) in rows {
        let (what, why) = match rule {
            Inside => continue,
            Containers { test } => (
                "honoured, each field as in `containers[]`".to_string(),
                format!("`{test}`"),
            ),
            Honoured { test } => ("honoured".to_string(), format!("`{test}`")),
            Accepted { why } => ("accepted".to_string(), why.to_string()),
            Refused { unless: &[], why } => ("**refused**".to_string(), why.to_string()),
            Refused { unless, why } => (
                format!("**refused** unless {}", quoted(unless)),
                why.to_string(),
            ),
            Values { honoured, test } => (
                format!("honoured: {}; other values **refused**", quoted(honoured)),
                format!("`{test}`"),
            ),
            Keys { honoured, test } => (
                format!("honoured: {}; other keys **refused**", quoted(honoured)),
                format!("`{test}`"),
            ),
        };
        out.push_str(&format!("| `{path}` | {what} | {why} |\n"));
    }
    out
}

/// An empty list, object or string asks for nothing (`imagePullSecrets: []`).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use serde_json::json;

    fn fields(spec: Value) -> Vec<String> {
        let spec: PodSpec = serde_json::from_value(spec).unwrap();
        refusals(&spec, "spec.template.spec")
            .into_iter()
            .map(|e| {
                assert!(
                    e.message.contains("not supported by this node agent"),
                    "{e}"
                );
                e.field
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_every_field_as_the_tables_say() {
        let readme = include_str!("../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's pod field table is not the current one; it is:\n{table}"
        );
        // initContainers' fields are containers[]'s
        assert!(table.contains("| `initContainers` | honoured, each field as in `containers[]` |"));
    }

    #[test]
    fn refusals_name_the_field() {
        let c = |extra: Value| {
            let mut c = json!({"name": "c", "image": "i"});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            json!({"containers": [c]})
        };
        let cases = [
            (
                json!({"containers": [], "initContainers": [{"name": "i"}]}),
                vec![],
            ),
            (
                json!({"containers": [], "initContainers": [{"name": "i", "tty": true}]}),
                vec![],
            ),
            (
                json!({"containers": [], "initContainers": [{"name": "i", "restartPolicy": "OnFailure"}]}),
                vec!["spec.template.spec.initContainers[0].restartPolicy"],
            ),
            (
                json!({"containers": [], "imagePullSecrets": [{"name": "s"}]}),
                vec![],
            ),
            (json!({"containers": [], "imagePullSecrets": []}), vec![]),
            (
                json!({"containers": [], "restartPolicy": "OnFailure"}),
                vec!["spec.template.spec.restartPolicy"],
            ),
            (json!({"containers": [], "restartPolicy": "Always"}), vec![]),
            (
                json!({"containers": [], "hostUsers": false}),
                vec!["spec.template.spec.hostUsers"],
            ),
            (json!({"containers": [], "hostUsers": true}), vec![]),
            (
                json!({"containers": [], "os": {"name": "windows"}}),
                vec!["spec.template.spec.os.name"],
            ),
            (
                json!({"containers": [], "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "k"}]}}}),
                vec!["spec.template.spec.affinity.podAntiAffinity"],
            ),
            (
                json!({"containers": [], "affinity": {"podAntiAffinity": {}}}),
                vec![],
            ),
            (
                json!({"containers": [], "volumes": [{"name": "a", "emptyDir": {}}, {"name": "s", "secret": {"secretName": "x"}},
                    {"name": "p", "projected": {"sources": [{"configMap": {"name": "c"}}, {"clusterTrustBundle": {"path": "b"}}]}}]}),
                vec!["spec.template.spec.volumes[2].projected.sources[1].clusterTrustBundle"],
            ),
            (
                json!({"containers": [], "volumes": [{"name": "a", "emptyDir": {"sizeLimit": "1Gi"}}, {"name": "b", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}]}),
                vec!["spec.template.spec.volumes[0].emptyDir.sizeLimit"],
            ),
            (
                json!({"containers": [], "securityContext": {"seLinuxOptions": {"level": "s0"}}}),
                vec!["spec.template.spec.securityContext.seLinuxOptions"],
            ),
            (
                c(
                    json!({"lifecycle": {"preStop": {"exec": {"command": ["x"]}}, "postStart": {"httpGet": {"port": 80}}}}),
                ),
                vec![],
            ),
            (
                c(
                    json!({"lifecycle": {"preStop": {"tcpSocket": {"port": 80}}, "stopSignal": "SIGUSR1"}}),
                ),
                vec![
                    "spec.template.spec.containers[0].lifecycle.preStop.tcpSocket",
                    "spec.template.spec.containers[0].lifecycle.stopSignal",
                ],
            ),
            (
                c(json!({"envFrom": [{"configMapRef": {"name": "x"}}]})),
                vec![],
            ),
            (
                c(
                    json!({"env": [{"name": "a", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}, {"name": "b", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}),
                ),
                vec![],
            ),
            // as upstream: a terminal without stdin is valid
            (
                c(json!({"tty": true, "stdin": false, "stdinOnce": true})),
                vec![],
            ),
            (
                c(
                    json!({"resources": {"limits": {"cpu": "1", "nvidia.com/gpu": "1"}, "requests": {"memory": "1Mi"}}}),
                ),
                vec!["spec.template.spec.containers[0].resources.limits[nvidia.com/gpu]"],
            ),
            (
                c(
                    json!({"volumeMounts": [{"name": "v", "mountPath": "/v", "recursiveReadOnly": "Enabled"}]}),
                ),
                vec!["spec.template.spec.containers[0].volumeMounts[0].recursiveReadOnly"],
            ),
            (
                c(
                    json!({"securityContext": {"privileged": true, "appArmorProfile": {"type": "RuntimeDefault"}}}),
                ),
                vec!["spec.template.spec.containers[0].securityContext.appArmorProfile"],
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(fields(spec.clone()), want, "{spec}");
        }
    }

    #[test]
    fn every_listed_path_is_unique() {
        for table in [POD_SPEC, CONTAINER] {
            let mut seen = std::collections::BTreeSet::new();
            for (p, _) in table {
                assert!(seen.insert(*p), "{p} listed twice");
            }
        }
    }
}
