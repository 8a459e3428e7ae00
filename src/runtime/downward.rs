//! The downward API as the kubelet serves it: a container's environment (`value` with `$(VAR)`
//! references expanded, `valueFrom.fieldRef`, `valueFrom.resourceFieldRef`), the expansion of
//! `command`, `args` and `subPathExpr`, and the files of a `downwardAPI` volume
//! (kubelet_pods.go: makeEnvironmentVariables, podFieldSelectorRuntimeValue;
//! pkg/api/v1/resource: ExtractContainerResourceValue; third_party/forked/golang/expansion).
//! Pure: the pod's facts are arguments.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeSource, ObjectFieldSelector, PodSpec, ResourceFieldSelector,
};

use crate::core::quantity::Quantity;

/// The node's capacity: what `resourceFieldRef` gives for a limit the container does not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeCapacity {
    pub cpu_milli: i64,
    pub memory_bytes: i64,
    pub ephemeral_storage_bytes: i64,
}

/// What a pod's downward API reads.
pub struct PodFacts<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
    pub spec: &'a PodSpec,
    /// The node's IPs (status.hostIPs).
    pub host_ips: &'a [String],
    /// The pod's IPs (status.podIPs): the node's with hostNetwork.
    pub pod_ips: &'a [String],
    pub node: NodeCapacity,
}

/// `$(VAR)` replaced by `lookup(VAR)` when it knows VAR (else left as written), `$$` by `$`.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if after.is_empty() {
            out.push('$');
            rest = after;
        } else if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(') {
            match tail.find(')') {
                Some(end) => {
                    let name = &tail[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&format!("$({name})")),
                    }
                    rest = &tail[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = tail;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `k="v"` lines in key order, as FormatMap writes labels and annotations.
fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `metadata.labels['k']` -> ("labels", "k").
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (field, rest) = path.strip_prefix("metadata.")?.split_once("['")?;
    let key = rest.strip_suffix("']")?;
    Some((field, key))
}

/// The value of a fieldRef (`whole_maps`: `metadata.labels` and `metadata.annotations` as a
/// whole, which volumes may name and environment variables may not).
pub fn field_value(
    sel: &ObjectFieldSelector,
    f: &PodFacts,
    whole_maps: bool,
) -> Result<String, String> {
    let first = |ips: &[String]| ips.first().cloned().unwrap_or_default();
    let path = sel.field_path.as_str();
    Ok(match path {
        "metadata.name" => f.name.to_string(),
        "metadata.namespace" => f.namespace.to_string(),
        "metadata.uid" => f.uid.to_string(),
        "metadata.labels" if whole_maps => format_map(f.labels),
        "metadata.annotations" if whole_maps => format_map(f.annotations),
        "spec.nodeName" => f.spec.node_name.clone().unwrap_or_default(),
        "spec.serviceAccountName" => f.spec.service_account_name.clone().unwrap_or_default(),
        "status.hostIP" => first(f.host_ips),
        "status.hostIPs" => f.host_ips.join(","),
        "status.podIP" => first(f.pod_ips),
        "status.podIPs" => f.pod_ips.join(","),
        other => match subscript(other) {
            Some(("labels", k)) => f.labels.get(k).cloned().unwrap_or_default(),
            Some(("annotations", k)) => f.annotations.get(k).cloned().unwrap_or_default(),
            _ => return Err(format!("unsupported fieldPath {other:?}")),
        },
    })
}

fn quantity(s: &str) -> Result<Quantity, String> {
    Quantity::parse(s).map_err(|e| format!("quantity {s:?}: {e}"))
}

fn ceil_div(a: i64, b: i64) -> i64 {
    if b <= 0 {
        return 0;
    }
    (a + b - 1).div_euclid(b)
}

/// The value of a resourceFieldRef of `container`: its limit (the node's capacity when it sets
/// none) or request (its limit when it sets none, as the API server defaults it), divided by the
/// divisor and rounded up.
pub fn resource_value(
    sel: &ResourceFieldSelector,
    container: &Container,
    node: NodeCapacity,
) -> Result<String, String> {
    let res = container.resources.clone().unwrap_or_default();
    let limits = res.limits.unwrap_or_default();
    let requests = res.requests.unwrap_or_default();
    let (kind, name) = sel
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {:?}", sel.resource))?;
    let capacity = match name {
        "cpu" => node.cpu_milli,
        "memory" => node.memory_bytes,
        "ephemeral-storage" => node.ephemeral_storage_bytes,
        _ => return Err(format!("unsupported resource {:?}", sel.resource)),
    };
    let as_units = |q: &Quantity| {
        if name == "cpu" {
            q.milli_value()
        } else {
            q.value()
        }
    };
    let limit = limits.get(name).map(|q| quantity(&q.0)).transpose()?;
    let value = match kind {
        "limits" => limit.as_ref().map_or(capacity, as_units),
        "requests" => match requests.get(name) {
            Some(q) => as_units(&quantity(&q.0)?),
            None => limit.as_ref().map_or(0, as_units),
        },
        _ => return Err(format!("unsupported resource {:?}", sel.resource)),
    };
    let divisor = match sel.divisor.as_ref().map(|d| quantity(&d.0)).transpose()? {
        Some(d) if !d.is_zero() => as_units(&d),
        _ if name == "cpu" => 1000,
        _ => 1,
    };
    Ok(ceil_div(value, divisor).to_string())
}

/// The container's environment after the image's: its `env` in order, each value expanded with
/// the variables defined before it, duplicates replaced in place.
pub fn container_env(c: &Container, f: &PodFacts) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            None => {
                let defined = |name: &str| {
                    out.iter()
                        .rev()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                };
                expand(e.value.as_deref().unwrap_or(""), &defined)
            }
            Some(from) => {
                if let Some(sel) = &from.field_ref {
                    field_value(sel, f, false).map_err(|m| format!("env {}: {m}", e.name))?
                } else if let Some(sel) = &from.resource_field_ref {
                    let target = match sel.container_name.as_deref() {
                        None | Some("") => c,
                        Some(n) => f
                            .spec
                            .containers
                            .iter()
                            .find(|x| x.name == n)
                            .ok_or_else(|| format!("env {}: no container {n}", e.name))?,
                    };
                    resource_value(sel, target, f.node)
                        .map_err(|m| format!("env {}: {m}", e.name))?
                } else {
                    return Err(format!(
                        "env {}: valueFrom is not supported by this node agent",
                        e.name
                    ));
                }
            }
        };
        match out.iter_mut().find(|(k, _)| *k == e.name) {
            Some(slot) => slot.1 = value,
            None => out.push((e.name.clone(), value)),
        }
    }
    Ok(out)
}

/// One file of a downwardAPI volume: its path under the volume, content and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownwardFile {
    pub path: String,
    pub content: String,
    pub mode: u32,
}

/// The files of a downwardAPI volume.
pub fn volume_files(
    src: &DownwardAPIVolumeSource,
    f: &PodFacts,
) -> Result<Vec<DownwardFile>, String> {
    let default_mode = src.default_mode.unwrap_or(0o644) as u32;
    let mut out = Vec::new();
    for item in src.items.iter().flatten() {
        let content = if let Some(sel) = &item.field_ref {
            field_value(sel, f, true)?
        } else if let Some(sel) = &item.resource_field_ref {
            let name = sel.container_name.as_deref().unwrap_or("");
            let c = f
                .spec
                .containers
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| format!("{}: no container {name:?}", item.path))?;
            resource_value(sel, c, f.node)?
        } else {
            return Err(format!(
                "{}: neither fieldRef nor resourceFieldRef",
                item.path
            ));
        };
        let path = item.path.trim_start_matches('/');
        if path.is_empty() || path.split('/').any(|p| p == "..") {
            return Err(format!("invalid path {:?}", item.path));
        }
        out.push(DownwardFile {
            path: path.to_string(),
            content,
            mode: item.mode.map_or(default_mode, |m| m as u32),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts<'a>(
        spec: &'a PodSpec,
        labels: &'a BTreeMap<String, String>,
        ips: &'a [String],
        host: &'a [String],
    ) -> PodFacts<'a> {
        PodFacts {
            name: "web-abc",
            namespace: "prod",
            uid: "u-1",
            labels,
            annotations: labels,
            spec,
            host_ips: host,
            pod_ips: ips,
            node: NodeCapacity {
                cpu_milli: 4000,
                memory_bytes: 8 << 30,
                ephemeral_storage_bytes: 100 << 30,
            },
        }
    }

    #[test]
    fn variables_expand_as_the_kubelet_does() {
        let vars = |n: &str| match n {
            "A" => Some("1".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        for (input, want) in [
            ("$(A)", "1"),
            ("x$(A)y$(A)", "x1y1"),
            ("$(B)", "$(B)"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$1"),
            ("$(A", "$(A"),
            ("a$", "a$"),
            ("$A", "$A"),
            ("$(EMPTY)x", "x"),
            ("plain", "plain"),
        ] {
            assert_eq!(expand(input, &vars), want, "{input}");
        }
        let spec: PodSpec = serde_json::from_value(json!({"containers": []})).unwrap();
        let labels = BTreeMap::new();
        let c: Container = serde_json::from_value(json!({"name": "c", "env": [
            {"name": "A", "value": "one"},
            {"name": "B", "value": "$(A)-two-$(C)"},
            {"name": "C", "value": "three"},
            {"name": "A", "value": "again-$(A)"}]}))
        .unwrap();
        let env = container_env(&c, &facts(&spec, &labels, &[], &[])).unwrap();
        assert_eq!(
            env,
            [
                ("A".into(), "again-one".into()),
                ("B".into(), "one-two-$(C)".into()),
                ("C".into(), "three".into())
            ]
        );
    }

    #[test]
    fn field_refs_follow_the_kubelet() {
        let spec: PodSpec = serde_json::from_value(json!({"containers": [],
            "nodeName": "node-1", "serviceAccountName": "sa"}))
        .unwrap();
        let labels = BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("b".into(), "x\"y".into()),
        ]);
        let ips = ["10.1.0.5".to_string(), "fd00::5".into()];
        let host = ["192.0.2.2".to_string()];
        let f = facts(&spec, &labels, &ips, &host);
        let get = |p: &str, whole: bool| {
            field_value(
                &ObjectFieldSelector {
                    field_path: p.into(),
                    api_version: None,
                },
                &f,
                whole,
            )
        };
        for (path, want) in [
            ("metadata.name", "web-abc"),
            ("metadata.namespace", "prod"),
            ("metadata.uid", "u-1"),
            ("metadata.labels['app']", "web"),
            ("metadata.labels['none']", ""),
            ("metadata.annotations['app']", "web"),
            ("spec.nodeName", "node-1"),
            ("spec.serviceAccountName", "sa"),
            ("status.hostIP", "192.0.2.2"),
            ("status.hostIPs", "192.0.2.2"),
            ("status.podIP", "10.1.0.5"),
            ("status.podIPs", "10.1.0.5,fd00::5"),
        ] {
            assert_eq!(get(path, false).unwrap(), want, "{path}");
        }
        assert!(
            get("metadata.labels", false).is_err(),
            "a whole map is for volumes"
        );
        assert_eq!(
            get("metadata.labels", true).unwrap(),
            "app=\"web\"\nb=\"x\\\"y\""
        );
        assert!(get("status.phase", false).is_err());
        let c: Container = serde_json::from_value(json!({"name": "c", "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "LISTEN", "value": "$(POD_IP):9100"}]}))
        .unwrap();
        assert_eq!(
            container_env(&c, &f).unwrap(),
            [
                ("NODE_NAME".into(), "node-1".into()),
                ("POD_IP".into(), "10.1.0.5".into()),
                ("LISTEN".into(), "10.1.0.5:9100".into())
            ]
        );
    }

    #[test]
    fn resource_field_refs_default_to_the_node() {
        let node = NodeCapacity {
            cpu_milli: 4000,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: 1 << 30,
        };
        let c: Container = serde_json::from_value(json!({"name": "c", "resources": {
            "limits": {"cpu": "1500m", "memory": "100Mi"}, "requests": {"cpu": "250m"}}}))
        .unwrap();
        let bare: Container = serde_json::from_value(json!({"name": "b"})).unwrap();
        let sel = |r: &str, d: Option<&str>| ResourceFieldSelector {
            resource: r.into(),
            divisor: d.map(|d| k8s_openapi::apimachinery::pkg::api::resource::Quantity(d.into())),
            container_name: None,
        };
        for (container, r, d, want) in [
            (&c, "limits.cpu", None, "2"),
            (&c, "limits.cpu", Some("1m"), "1500"),
            (&c, "limits.memory", None, "104857600"),
            (&c, "limits.memory", Some("1Mi"), "100"),
            (&c, "requests.cpu", Some("1m"), "250"),
            (&c, "requests.memory", None, "104857600"),
            (&bare, "limits.cpu", None, "4"),
            (&bare, "limits.memory", Some("1Gi"), "8"),
            (&bare, "limits.ephemeral-storage", None, "1073741824"),
            (&bare, "requests.cpu", None, "0"),
        ] {
            assert_eq!(
                resource_value(&sel(r, d), container, node).unwrap(),
                want,
                "{r} {d:?}"
            );
        }
        assert!(resource_value(&sel("limits.gpu", None), &c, node).is_err());
    }

    #[test]
    fn downward_api_volume_files() {
        let spec: PodSpec = serde_json::from_value(json!({"containers": [
            {"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]}))
        .unwrap();
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let f = facts(&spec, &labels, &[], &[]);
        let src: DownwardAPIVolumeSource = serde_json::from_value(json!({"defaultMode": 0o600, "items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "sub/name", "fieldRef": {"fieldPath": "metadata.name"}, "mode": 0o644},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}]}))
        .unwrap();
        assert_eq!(
            volume_files(&src, &f).unwrap(),
            [
                DownwardFile {
                    path: "labels".into(),
                    content: "app=\"web\"".into(),
                    mode: 0o600
                },
                DownwardFile {
                    path: "sub/name".into(),
                    content: "web-abc".into(),
                    mode: 0o644
                },
                DownwardFile {
                    path: "mem".into(),
                    content: "64".into(),
                    mode: 0o600
                },
            ]
        );
        let bad: DownwardAPIVolumeSource = serde_json::from_value(json!({"items": [
            {"path": "../x", "fieldRef": {"fieldPath": "metadata.name"}}]}))
        .unwrap();
        assert!(volume_files(&bad, &f).is_err());
    }
}
