//! v1 ServiceAccounts: the identity pods run as. Every namespace has a `default` one, made by the
//! server's service-account controller (`controllers::serviceaccounts`), as
//! kube-controller-manager's does; its `imagePullSecrets` are the pulls of pods that name it and
//! its `automountServiceAccountToken` their token's default.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{json, Value};

use crate::core::names;
use crate::core::validation::{validate_object_meta, FieldError};
use crate::server::resources::{Resource, ALL_VERBS};
use crate::server::strategy::{Column, Kind};
use crate::server::table::{age, name};

pub static SERVICE_ACCOUNTS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "serviceaccounts",
    singular: "serviceaccount",
    kind: "ServiceAccount",
    namespaced: true,
    short_names: &["sa"],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    strategy: &ServiceAccountStrategy,
};

/// The ServiceAccount of a pod that names none, made in every namespace.
pub use crate::core::podrefs::DEFAULT_SERVICE_ACCOUNT;

struct ServiceAccountStrategy;

const COLUMNS: &[Column] = &[Column::NAME, Column::integer("Secrets", 0), Column::AGE];

#[async_trait]
impl Kind for ServiceAccountStrategy {
    type Object = ServiceAccount;

    fn validate(&self, sa: &ServiceAccount) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&sa.metadata, true, names::is_dns1123_subdomain);
        for (i, s) in sa.image_pull_secrets.iter().flatten().enumerate() {
            if s.name.is_empty() {
                errs.push(FieldError::required(
                    &format!("imagePullSecrets[{i}].name"),
                    "",
                ));
            }
        }
        errs
    }
    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let secrets = obj
            .get("secrets")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        vec![name(obj), json!(secrets), json!(age(obj, now))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::query::FieldValidation;
    use crate::server::strategy::Prepare;

    #[test]
    fn names_and_pull_secrets_are_validated() {
        let cases = [
            (
                json!({"metadata": {"name": "sa", "namespace": "d"}, "imagePullSecrets": [{"name": "r"}]}),
                true,
            ),
            (
                json!({"metadata": {"name": "Bad_Name", "namespace": "d"}}),
                false,
            ),
            (
                json!({"metadata": {"name": "sa", "namespace": "d"}, "imagePullSecrets": [{}]}),
                false,
            ),
        ];
        for (obj, ok) in cases {
            let got = SERVICE_ACCOUNTS.strategy.prepare(
                &obj,
                Prepare {
                    resource: &SERVICE_ACCOUNTS,
                    old: None,
                    validation: FieldValidation::Strict,
                    policy: None,
                },
            );
            assert_eq!(got.is_ok(), ok, "{obj}");
        }
    }
}
