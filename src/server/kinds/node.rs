//! v1 Nodes: registered by the agents, which heartbeat through the status subresource.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

use crate::core::patch::{self, Schema};
use crate::core::validation::{self, FieldError};
use crate::server::resources::{Resource, ALL_VERBS};
use crate::server::strategy::{Column, Kind};
use crate::server::subresource::STATUS;
use crate::server::table::{age, name, none_if_empty, s};

pub static NODES: Resource = Resource {
    group: "",
    version: "v1",
    plural: "nodes",
    singular: "node",
    kind: "Node",
    namespaced: false,
    short_names: &["no"],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[&STATUS, &crate::server::proxy::NODE_PROXY],
    strategy: &NodeStrategy,
};

struct NodeStrategy;

/// kube-apiserver's node printer.
const COLUMNS: &[Column] = &[
    Column::NAME,
    Column::string("Status", 0),
    Column::string("Roles", 0),
    Column::AGE,
    Column::string("Version", 0),
    Column::string("Internal-IP", 1),
    Column::string("External-IP", 1),
    Column::string("OS-Image", 1),
    Column::string("Kernel-Version", 1),
    Column::string("Container-Runtime", 1),
];

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

#[async_trait]
impl Kind for NodeStrategy {
    type Object = Node;

    fn validate(&self, node: &Node) -> Vec<FieldError> {
        validation::validate_node(node)
    }
    fn patch_schema(&self) -> &'static Schema {
        &patch::NODE
    }
    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let info = |field: &str| {
            let v = s(obj, &format!("/status/nodeInfo/{field}"));
            json!(none_if_empty(v.to_string()))
        };
        vec![
            name(obj),
            json!(node_status(obj)),
            json!(node_roles(obj)),
            json!(age(obj, now)),
            json!(s(obj, "/status/nodeInfo/kubeletVersion")),
            json!(node_address(obj, "InternalIP")),
            json!(node_address(obj, "ExternalIP")),
            info("osImage"),
            info("kernelVersion"),
            info("containerRuntimeVersion"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_readiness_roles_and_addresses() {
        let now = Utc::now();
        // (node, Status, Roles, Internal-IP)
        let cases = [
            (
                json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/worker": "true"}},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1"},
                        "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}),
                "Ready",
                "worker",
                "10.0.0.1",
            ),
            (
                json!({"metadata": {"name": "n", "labels": {"kubernetes.io/role": "edge", "node-role.kubernetes.io/": ""}},
                    "spec": {"unschedulable": true},
                    "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                "NotReady,SchedulingDisabled",
                "edge",
                "<none>",
            ),
            (
                json!({"metadata": {"name": "n"}}),
                "Unknown",
                "<none>",
                "<none>",
            ),
        ];
        for (node, status, roles, ip) in cases {
            let cells = NodeStrategy.cells(&node, now);
            assert_eq!(cells[1], status, "{node}");
            assert_eq!(cells[2], roles, "{node}");
            assert_eq!(cells[5], ip, "{node}");
            assert_eq!(cells[7], "<none>", "{node}");
        }
    }
}
