//! apps/v1 ReplicaSets: defaulted and validated as kube-apiserver does (the template rules are
//! the DaemonSet's, shared in `core::validation`), `metadata.generation` bumped on spec changes,
//! status written by the controller through the status subresource, `replicas` read and written
//! through the `scale` subresource (`kubectl scale rs/NAME --replicas=N`).
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::{json, Value};

use crate::core::patch::{self, Schema};
use crate::core::validation::{self, FieldError, Policy};
use crate::server::resources::{Resource, ALL_VERBS};
use crate::server::strategy::{Column, Kind};
use crate::server::subresource::{SCALE, STATUS};
use crate::server::table::{age, containers_images, format_selector, i, name};

pub static REPLICASETS: Resource = Resource {
    group: "apps",
    version: "v1",
    plural: "replicasets",
    singular: "replicaset",
    kind: "ReplicaSet",
    namespaced: true,
    short_names: &["rs"],
    categories: &["all"],
    verbs: ALL_VERBS,
    subresources: &[&STATUS, &SCALE],
    strategy: &ReplicaSetStrategy,
};

struct ReplicaSetStrategy;

/// kube-apiserver's replicaset printer.
const COLUMNS: &[Column] = &[
    Column::NAME,
    Column::integer("Desired", 0),
    Column::integer("Current", 0),
    Column::integer("Ready", 0),
    Column::AGE,
    Column::string("Containers", 1),
    Column::string("Images", 1),
    Column::string("Selector", 1),
];

#[async_trait]
impl Kind for ReplicaSetStrategy {
    type Object = ReplicaSet;

    fn default(&self, rs: &mut ReplicaSet) {
        validation::default_replicaset(rs);
    }
    fn validate(&self, rs: &ReplicaSet) -> Vec<FieldError> {
        validation::validate_replicaset(rs)
    }
    fn validate_update(&self, rs: &ReplicaSet, old: &ReplicaSet) -> Vec<FieldError> {
        validation::validate_replicaset_update(rs, old)
    }
    fn admit(&self, rs: &ReplicaSet, policy: Policy) -> Vec<FieldError> {
        let template = rs
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref());
        match template {
            Some(spec) => validation::validate_policy(Some(spec), "spec.template.spec", policy),
            None => Vec::new(),
        }
    }
    fn initial_status(&self) -> Option<Value> {
        Some(json!({"replicas": 0}))
    }
    fn generation_fields(&self) -> &'static [&'static str] {
        &["spec"]
    }
    /// The same patch metadata as a DaemonSet's: a pod template and status conditions.
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
            json!(i(obj, "/spec/replicas")),
            json!(i(obj, "/status/replicas")),
            json!(i(obj, "/status/readyReplicas")),
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

    fn rs(v: Value) -> ReplicaSet {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn rows_carry_kubectl_columns() {
        let now = Utc::now();
        let obj = json!({"metadata": {"name": "r", "creationTimestamp": now.to_rfc3339()},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "x"}}, "template": {"spec": {
                "containers": [{"name": "c", "image": "i:1"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1}});
        let t = table(&REPLICASETS, &[&obj], Some(7), "Metadata", now);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["r", 3, 2, 1, "0s", "c", "i:1", "app=x"])
        );
    }

    #[test]
    fn validation_and_defaults_follow_kube_apiserver() {
        let good = json!({"metadata": {"name": "r"}, "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let mut ok = rs(good.clone());
        ReplicaSetStrategy.default(&mut ok);
        assert_eq!(ok.spec.as_ref().unwrap().replicas, Some(1));
        assert!(ReplicaSetStrategy.validate(&ok).is_empty());

        let mut bad = good.clone();
        bad["spec"]["replicas"] = json!(-1);
        bad["spec"]["template"]["metadata"]["labels"] = json!({"app": "y"});
        let errs: Vec<String> = ReplicaSetStrategy
            .validate(&rs(bad))
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with("spec.replicas: Invalid value"),
            "{errs:?}"
        );
        assert!(errs[0].ends_with("must be greater than or equal to 0"));
        assert!(errs[1].ends_with("`selector` does not match template `labels`"));

        let mut moved = good;
        moved["spec"]["selector"] = json!({"matchLabels": {"app": "z"}});
        moved["spec"]["template"]["metadata"]["labels"] = json!({"app": "z"});
        let errs = ReplicaSetStrategy.validate_update(&rs(moved), &ok);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().ends_with("field is immutable"));
    }
}
