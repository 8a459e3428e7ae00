//! `meta.k8s.io/v1` Tables, with the columns kube-apiserver's printers use, for `kubectl get`.
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::resources::Resource;

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn col(name: &str, ty: &str, format: &str, priority: i32) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

fn columns(r: &Resource) -> Vec<Value> {
    let name = col("Name", "string", "name", 0);
    let age = col("Age", "string", "", 0);
    match r.kind {
        "DaemonSet" => vec![
            name,
            col("Desired", "integer", "", 0),
            col("Current", "integer", "", 0),
            col("Ready", "integer", "", 0),
            col("Up-to-date", "integer", "", 0),
            col("Available", "integer", "", 0),
            col("Node Selector", "string", "", 0),
            age,
            col("Containers", "string", "", 1),
            col("Images", "string", "", 1),
            col("Selector", "string", "", 1),
        ],
        "Node" => vec![
            name,
            col("Status", "string", "", 0),
            col("Roles", "string", "", 0),
            age,
            col("Version", "string", "", 0),
            col("Internal-IP", "string", "", 1),
            col("External-IP", "string", "", 1),
            col("OS-Image", "string", "", 1),
            col("Kernel-Version", "string", "", 1),
            col("Container-Runtime", "string", "", 1),
        ],
        "Pod" => vec![
            name,
            col("Ready", "string", "", 0),
            col("Status", "string", "", 0),
            col("Restarts", "string", "", 0),
            age,
            col("IP", "string", "", 1),
            col("Node", "string", "", 1),
            col("Nominated Node", "string", "", 1),
            col("Readiness Gates", "string", "", 1),
        ],
        "Namespace" => vec![name, col("Status", "string", "", 0), age],
        "Lease" => vec![name, col("Holder", "string", "", 0), age],
        "ControllerRevision" => vec![
            name,
            col("Controller", "string", "", 0),
            col("Revision", "integer", "", 0),
            age,
        ],
        _ => vec![name, age],
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}
fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}
fn none_if_empty(x: String) -> String {
    if x.is_empty() {
        "<none>".into()
    } else {
        x
    }
}

fn format_labels(v: Option<&Value>) -> String {
    let items: Vec<String> = v
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    none_if_empty(items.join(","))
}

fn format_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        let mut kv: Vec<_> = m.iter().collect();
        kv.sort_by(|a, b| a.0.cmp(b.0));
        parts.extend(
            kv.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))),
        );
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = s(e, "/key");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            parts.push(match s(e, "/operator") {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                op => format!("{key} {op} ({})", values.join(",")),
            });
        }
    }
    none_if_empty(parts.join(","))
}

/// Kubernetes' duration.HumanDuration.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(obj: &Value, now: DateTime<Utc>) -> String {
    match DateTime::parse_from_rfc3339(s(obj, "/metadata/creationTimestamp")) {
        Ok(t) => human_duration((now - t.with_timezone(&Utc)).num_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

fn containers_images(spec: Option<&Value>) -> (String, String) {
    let cs = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn node_status(obj: &Value) -> String {
    let conds = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut status = match conds.iter().find(|c| s(c, "/type") == "Ready") {
        Some(c) if s(c, "/status") == "True" => "Ready".to_string(),
        Some(c) if s(c, "/status") == "False" => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if obj
        .pointer("/spec/unschedulable")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        status.push_str(",SchedulingDisabled");
    }
    status
}

fn node_roles(obj: &Value) -> String {
    let mut roles: Vec<String> = Vec::new();
    if let Some(m) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in m {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.push(v.to_string());
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    none_if_empty(roles.join(","))
}

fn node_address(obj: &Value, ty: &str) -> String {
    obj.pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| s(x, "/type") == ty))
        .map(|x| s(x, "/address").to_string())
        .map(none_if_empty)
        .unwrap_or_else(|| "<none>".into())
}

fn pod_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let total = obj
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let statuses = obj
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool).unwrap_or(false))
        .count();
    let restarts: i64 = statuses.iter().map(|c| i(c, "/restartCount")).sum();
    let mut reason = s(obj, "/status/reason").to_string();
    if reason.is_empty() {
        reason = s(obj, "/status/phase").to_string();
    }
    for c in &statuses {
        let waiting = s(c, "/state/waiting/reason");
        let terminated = s(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            reason = waiting.to_string();
        } else if !terminated.is_empty() {
            reason = terminated.to_string();
        }
    }
    if reason.is_empty() {
        reason = "Pending".into();
    }
    let gates = obj
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ip = none_if_empty(s(obj, "/status/podIP").to_string());
    let node = none_if_empty(s(obj, "/spec/nodeName").to_string());
    let nominated = none_if_empty(s(obj, "/status/nominatedNodeName").to_string());
    vec![
        json!(s(obj, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        json!(age(obj, now)),
        json!(ip),
        json!(node),
        json!(nominated),
        json!(if gates == 0 {
            "<none>".to_string()
        } else {
            format!("0/{gates}")
        }),
    ]
}

fn cells(r: &Resource, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    match r.kind {
        "DaemonSet" => {
            let (containers, images) = containers_images(obj.pointer("/spec/template/spec"));
            vec![
                name,
                json!(i(obj, "/status/desiredNumberScheduled")),
                json!(i(obj, "/status/currentNumberScheduled")),
                json!(i(obj, "/status/numberReady")),
                json!(i(obj, "/status/updatedNumberScheduled")),
                json!(i(obj, "/status/numberAvailable")),
                json!(format_labels(
                    obj.pointer("/spec/template/spec/nodeSelector")
                )),
                json!(age(obj, now)),
                json!(containers),
                json!(images),
                json!(format_selector(obj.pointer("/spec/selector"))),
            ]
        }
        "Node" => vec![
            name,
            json!(node_status(obj)),
            json!(node_roles(obj)),
            json!(age(obj, now)),
            json!(s(obj, "/status/nodeInfo/kubeletVersion")),
            json!(node_address(obj, "InternalIP")),
            json!(node_address(obj, "ExternalIP")),
            json!(none_if_empty(
                s(obj, "/status/nodeInfo/osImage").to_string()
            )),
            json!(none_if_empty(
                s(obj, "/status/nodeInfo/kernelVersion").to_string()
            )),
            json!(none_if_empty(
                s(obj, "/status/nodeInfo/containerRuntimeVersion").to_string()
            )),
        ],
        "Pod" => pod_cells(obj, now),
        "Namespace" => vec![
            name,
            json!(if s(obj, "/status/phase").is_empty() {
                "Active"
            } else {
                s(obj, "/status/phase")
            }),
            json!(age(obj, now)),
        ],
        "Lease" => vec![
            name,
            json!(none_if_empty(s(obj, "/spec/holderIdentity").to_string())),
            json!(age(obj, now)),
        ],
        "ControllerRevision" => {
            let controller = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
                })
                .map(|o| {
                    format!(
                        "{}.{}/{}",
                        s(o, "/kind").to_lowercase(),
                        s(o, "/apiVersion").split('/').next().unwrap_or(""),
                        s(o, "/name")
                    )
                })
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                json!(controller),
                json!(i(obj, "/revision")),
                json!(age(obj, now)),
            ]
        }
        _ => vec![name, json!(age(obj, now))],
    }
}

fn partial_metadata(obj: &Value) -> Value {
    let mut meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.remove("managedFields");
    }
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
}

/// A Table of `objects`; `include_object` is the `includeObject` query parameter
/// (None, Metadata (default) or Object).
pub fn table(
    r: &Resource,
    objects: &[&Value],
    rv: Option<u64>,
    include_object: &str,
    now: DateTime<Utc>,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(r, o, now)});
            match include_object {
                "None" => {}
                "Object" => row["object"] = (*o).clone(),
                _ => row["object"] = partial_metadata(o),
            }
            row
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = rv {
        metadata["resourceVersion"] = json!(rv.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns(r),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::super::resources::{DAEMONSETS, NODES, PODS};
    use super::*;

    #[test]
    fn human_durations_match_kubernetes() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn rows_carry_kubectl_columns() {
        let now = Utc::now();
        let ds = json!({"metadata": {"name": "m", "creationTimestamp": now.to_rfc3339(), "labels": {"a": "b"}},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"spec": {
                "nodeSelector": {"w": "true"}, "containers": [{"name": "c", "image": "i:1"}]}}},
            "status": {"desiredNumberScheduled": 2, "numberReady": 1}});
        let t = table(&DAEMONSETS, &[&ds], Some(7), "Metadata", now);
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["m", 2, 0, 1, 0, 0, "w=true", "0s", "c", "i:1", "app=x"])
        );
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["a"], "b");
        let node = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/worker": "true"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1"}}});
        let t = table(&NODES, &[&node], None, "None", now);
        assert_eq!(t["rows"][0]["cells"][1], "Ready");
        assert_eq!(t["rows"][0]["cells"][2], "worker");
        assert!(t["rows"][0].get("object").is_none());
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 2}]}});
        let t = table(&PODS, &[&pod], None, "Metadata", now);
        assert_eq!(
            &t["rows"][0]["cells"].as_array().unwrap()[..4],
            &[json!("p"), json!("1/1"), json!("Running"), json!("2")]
        );
        assert_eq!(t["rows"][0]["cells"][6], "n");
    }
}
