//! coordination.k8s.io/v1 Leases: the agents' node heartbeats in `kube-node-lease`.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::{json, Value};

use crate::core::names;
use crate::core::validation::{validate_object_meta, FieldError};
use crate::server::resources::{Resource, ALL_VERBS};
use crate::server::strategy::{Column, Kind};
use crate::server::table::{age, name, none_if_empty, s};

pub static LEASES: Resource = Resource {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    singular: "lease",
    kind: "Lease",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    strategy: &LeaseStrategy,
};

struct LeaseStrategy;

const COLUMNS: &[Column] = &[Column::NAME, Column::string("Holder", 0), Column::AGE];

#[async_trait]
impl Kind for LeaseStrategy {
    type Object = Lease;

    fn validate(&self, lease: &Lease) -> Vec<FieldError> {
        validate_object_meta(&lease.metadata, true, names::is_dns1123_subdomain)
    }
    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        vec![
            name(obj),
            json!(none_if_empty(s(obj, "/spec/holderIdentity").to_string())),
            json!(age(obj, now)),
        ]
    }
}
