//! v1 Namespaces: names are DNS-1123 labels; deleting one deletes its contents at once (no
//! Terminating phase, no finalizers).
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Namespace;
use serde_json::{json, Value};

use super::ALL;
use crate::core::names;
use crate::core::validation::{validate_object_meta, FieldError};
use crate::server::auth::User;
use crate::server::query::Filter;
use crate::server::resources::Resource;
use crate::server::status::ApiError;
use crate::server::strategy::{Column, Kind};
use crate::server::table::{age, name, s};
use crate::server::verbs::{Api, DeleteOptions, ObjectRef};

pub static NAMESPACES: Resource = Resource {
    group: "",
    version: "v1",
    plural: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    namespaced: false,
    short_names: &["ns"],
    categories: &[],
    verbs: &[
        "create", "delete", "get", "list", "patch", "update", "watch",
    ],
    subresources: &[],
    strategy: &NamespaceStrategy,
};

struct NamespaceStrategy;

const COLUMNS: &[Column] = &[Column::NAME, Column::string("Status", 0), Column::AGE];

#[async_trait]
impl Kind for NamespaceStrategy {
    type Object = Namespace;

    fn validate(&self, ns: &Namespace) -> Vec<FieldError> {
        validate_object_meta(&ns.metadata, false, names::is_dns1123_label)
    }
    fn initial_status(&self) -> Option<Value> {
        Some(json!({"phase": "Active"}))
    }
    /// The namespace controller's work, done at once: every namespaced object in it is deleted
    /// (as the namespace controller, through the verbs).
    async fn after_delete(&self, api: &Api, obj: &Value) -> Result<(), ApiError> {
        let ns = s(obj, "/metadata/name");
        let user = User::internal("namespace-controller");
        for r in ALL.iter().copied().filter(|r| r.namespaced) {
            let (items, _) = api.list(&user, r, Some(ns), &Filter::default()).await?;
            for item in items {
                let name = s(&item, "/metadata/name");
                match api
                    .delete(
                        &user,
                        ObjectRef::new(r, Some(ns), name),
                        &DeleteOptions::default(),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let phase = match s(obj, "/status/phase") {
            "" => "Active",
            phase => phase,
        };
        vec![name(obj), json!(phase), json!(age(obj, now))]
    }
}
