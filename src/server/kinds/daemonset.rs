//! apps/v1 DaemonSets: defaulted and validated as kube-apiserver does, the pod policy applied
//! to their template, `metadata.generation` bumped on spec changes, status written by the
//! controller through the status subresource.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::DaemonSet;
use serde_json::{json, Value};

use crate::core::patch::{self, Schema};
use crate::core::validation::{self, FieldError, Policy};
use crate::server::resources::{Resource, ALL_VERBS};
use crate::server::strategy::{Column, Kind};
use crate::server::subresource::STATUS;
use crate::server::table::{age, containers_images, format_labels, format_selector, i, name};

pub static DAEMONSETS: Resource = Resource {
    group: "apps",
    version: "v1",
    plural: "daemonsets",
    singular: "daemonset",
    kind: "DaemonSet",
    namespaced: true,
    short_names: &["ds"],
    categories: &["all"],
    verbs: ALL_VERBS,
    subresources: &[&STATUS],
    strategy: &DaemonSetStrategy,
};

struct DaemonSetStrategy;

/// kube-apiserver's daemonset printer.
const COLUMNS: &[Column] = &[
    Column::NAME,
    Column::integer("Desired", 0),
    Column::integer("Current", 0),
    Column::integer("Ready", 0),
    Column::integer("Up-to-date", 0),
    Column::integer("Available", 0),
    Column::string("Node Selector", 0),
    Column::AGE,
    Column::string("Containers", 1),
    Column::string("Images", 1),
    Column::string("Selector", 1),
];

#[async_trait]
impl Kind for DaemonSetStrategy {
    type Object = DaemonSet;

    fn default(&self, ds: &mut DaemonSet) {
        validation::default_daemonset(ds);
    }
    fn validate(&self, ds: &DaemonSet) -> Vec<FieldError> {
        validation::validate_daemonset(ds)
    }
    fn validate_update(&self, ds: &DaemonSet, old: &DaemonSet) -> Vec<FieldError> {
        validation::validate_daemonset_update(ds, old)
    }
    fn admit(&self, ds: &DaemonSet, policy: Policy) -> Vec<FieldError> {
        let template = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        match template {
            Some(spec) => {
                let path = "spec.template.spec";
                let mut errs = validation::validate_policy(Some(spec), path, policy);
                errs.extend(validation::validate_node_support(Some(spec), path));
                errs
            }
            None => Vec::new(),
        }
    }
    fn initial_status(&self) -> Option<Value> {
        Some(
            json!({"currentNumberScheduled": 0, "desiredNumberScheduled": 0,
            "numberMisscheduled": 0, "numberReady": 0}),
        )
    }
    fn generation_fields(&self) -> &'static [&'static str] {
        &["spec"]
    }
    fn patch_schema(&self) -> &'static Schema {
        &patch::DAEMONSET
    }
    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let (containers, images) = containers_images(obj.pointer("/spec/template/spec"));
        vec![
            name(obj),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::table::table;

    #[test]
    fn rows_carry_kubectl_columns() {
        let now = Utc::now();
        let ds = json!({"metadata": {"name": "m", "creationTimestamp": now.to_rfc3339(), "labels": {"a": "b"}},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"spec": {
                "nodeSelector": {"w": "true"}, "containers": [{"name": "c", "image": "i:1"}]}}},
            "status": {"desiredNumberScheduled": 2, "numberReady": 1}});
        let t = table(&DAEMONSETS, &[&ds], Some(7), "Metadata", now);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["m", 2, 0, 1, 0, 0, "w=true", "0s", "c", "i:1", "app=x"])
        );
    }

    #[test]
    fn the_template_is_admitted_by_the_policy() {
        let ds: DaemonSet = serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {"containers": [{"name": "c"}],
                "volumes": [{"name": "v", "hostPath": {"path": "/"}}]}}}}))
        .unwrap();
        let deny = Policy {
            allow_privileged: true,
            allow_host_path: false,
            ..Policy::default()
        };
        let fields: Vec<String> = DaemonSetStrategy
            .admit(&ds, deny)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["spec.template.spec.volumes[0].hostPath"]);
        assert!(DaemonSetStrategy.admit(&ds, Policy::default()).is_empty());
        assert!(DaemonSetStrategy
            .admit(&DaemonSet::default(), deny)
            .is_empty());
    }
}
