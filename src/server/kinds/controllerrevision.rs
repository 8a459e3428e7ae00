//! apps/v1 ControllerRevisions: the DaemonSet controller's record of each template.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::ControllerRevision;
use serde_json::{json, Value};

use crate::core::names;
use crate::core::validation::{validate_object_meta, FieldError};
use crate::server::resources::{Resource, ALL_VERBS};
use crate::server::strategy::{Column, Kind};
use crate::server::table::{age, i, name, s};

pub static CONTROLLER_REVISIONS: Resource = Resource {
    group: "apps",
    version: "v1",
    plural: "controllerrevisions",
    singular: "controllerrevision",
    kind: "ControllerRevision",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    strategy: &ControllerRevisionStrategy,
};

struct ControllerRevisionStrategy;

const COLUMNS: &[Column] = &[
    Column::NAME,
    Column::string("Controller", 0),
    Column::integer("Revision", 0),
    Column::AGE,
];

/// `KIND.GROUP/NAME` of the controlling owner, as the controllerrevision printer shows it.
fn controller(obj: &Value) -> String {
    obj.pointer("/metadata/ownerReferences")
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
        .unwrap_or_else(|| "<none>".into())
}

#[async_trait]
impl Kind for ControllerRevisionStrategy {
    type Object = ControllerRevision;

    fn validate(&self, cr: &ControllerRevision) -> Vec<FieldError> {
        validate_object_meta(&cr.metadata, true, names::is_dns1123_subdomain)
    }
    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        vec![
            name(obj),
            json!(controller(obj)),
            json!(i(obj, "/revision")),
            json!(age(obj, now)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controller_column_names_the_owner() {
        let owned = json!({"metadata": {"name": "d-1", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "controller": true}]}, "revision": 3});
        let cells = ControllerRevisionStrategy.cells(&owned, Utc::now());
        assert_eq!(cells[1], "daemonset.apps/d");
        assert_eq!(cells[2], 3);
        let orphan = json!({"metadata": {"name": "x"}});
        assert_eq!(
            ControllerRevisionStrategy.cells(&orphan, Utc::now())[1],
            "<none>"
        );
    }
}
