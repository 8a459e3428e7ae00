//! v1 ConfigMaps: `data` (strings) and `binaryData` (base64) under keys that are file names in a
//! volume (`names::is_config_map_key`), at most 1 MiB together, never the same key in both; all of
//! an `immutable: true` ConfigMap stays as it is (kube-apiserver's ValidateConfigMap and
//! ValidateConfigMapUpdate).
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{json, Value};

use crate::core::names;
use crate::core::validation::{validate_object_meta, FieldError};
use crate::server::resources::{Resource, ALL_VERBS};
use crate::server::strategy::{Column, Kind};
use crate::server::table::{age, name};

pub static CONFIG_MAPS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "configmaps",
    singular: "configmap",
    kind: "ConfigMap",
    namespaced: true,
    short_names: &["cm"],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    strategy: &ConfigMapStrategy,
};

struct ConfigMapStrategy;

/// kube-apiserver's limit on the data of one ConfigMap or Secret (`MaxSecretSize`).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

const COLUMNS: &[Column] = &[Column::NAME, Column::integer("Data", 0), Column::AGE];

/// The errors of `data`'s (or `binaryData`'s) keys, the field path prefix given.
pub fn key_errors<'a>(field: &str, keys: impl Iterator<Item = &'a String>) -> Vec<FieldError> {
    keys.flat_map(|k| {
        names::is_config_map_key(k)
            .into_iter()
            .map(move |m| FieldError::invalid(&format!("{field}[{k}]"), &format!("{k:?}"), &m))
    })
    .collect()
}

/// A data field changed on an `immutable: true` object, or `immutable` unset.
pub fn immutable_errors(
    old_immutable: Option<bool>,
    new_immutable: Option<bool>,
    data_changed: bool,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if old_immutable != Some(true) {
        return errs;
    }
    if new_immutable != Some(true) {
        errs.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    if data_changed {
        errs.push(FieldError::forbidden(
            "data",
            "field is immutable when `immutable` is set",
        ));
    }
    errs
}

#[async_trait]
impl Kind for ConfigMapStrategy {
    type Object = ConfigMap;

    fn validate(&self, cm: &ConfigMap) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&cm.metadata, true, names::is_dns1123_subdomain);
        let data = cm.data.as_ref();
        let binary = cm.binary_data.as_ref();
        errs.extend(key_errors("data", data.into_iter().flat_map(|d| d.keys())));
        errs.extend(key_errors(
            "binaryData",
            binary.into_iter().flat_map(|d| d.keys()),
        ));
        for k in data.into_iter().flat_map(|d| d.keys()) {
            if binary.is_some_and(|b| b.contains_key(k)) {
                errs.push(FieldError::invalid(
                    &format!("data[{k}]"),
                    &format!("{k:?}"),
                    "duplicate of key present in binaryData",
                ));
            }
        }
        let size: usize = data
            .into_iter()
            .flatten()
            .map(|(_, v)| v.len())
            .sum::<usize>()
            + binary
                .into_iter()
                .flatten()
                .map(|(_, v)| v.0.len())
                .sum::<usize>();
        if size > MAX_DATA_BYTES {
            errs.push(FieldError::too_long("", MAX_DATA_BYTES));
        }
        errs
    }
    fn validate_update(&self, cm: &ConfigMap, old: &ConfigMap) -> Vec<FieldError> {
        let mut errs = self.validate(cm);
        let changed = cm.data != old.data || cm.binary_data != old.binary_data;
        errs.extend(immutable_errors(old.immutable, cm.immutable, changed));
        errs
    }
    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let count = |k: &str| obj.get(k).and_then(Value::as_object).map_or(0, |d| d.len());
        vec![
            name(obj),
            json!(count("data") + count("binaryData")),
            json!(age(obj, now)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::query::FieldValidation;
    use crate::server::strategy::Prepare;

    fn prepare(obj: &Value, old: Option<&Value>) -> Result<Value, String> {
        CONFIG_MAPS
            .strategy
            .prepare(
                obj,
                Prepare {
                    resource: &CONFIG_MAPS,
                    old,
                    validation: FieldValidation::Strict,
                    policy: None,
                },
            )
            .map(|p| p.object)
            .map_err(|e| e.message)
    }

    fn cm(body: Value) -> Value {
        let mut v = json!({"metadata": {"name": "c", "namespace": "d"}});
        v.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        v
    }

    #[test]
    fn keys_size_and_duplicates_are_validated() {
        let big = "x".repeat(MAX_DATA_BYTES / 2 + 1);
        // (body, Ok or a part of the error)
        let cases = [
            (json!({"data": {"a.conf": "x", "B_1": "y"}}), Ok(())),
            (json!({"binaryData": {"bin": "AAE="}}), Ok(())),
            (
                json!({"data": {"a/b": "x"}}),
                Err("data[a/b]: Invalid value: \"a/b\": a valid config key"),
            ),
            (
                json!({"data": {"..x": "x"}}),
                Err("must not start with '..'"),
            ),
            (
                json!({"data": {"k": "x"}, "binaryData": {"k": "AA=="}}),
                Err("duplicate of key present in binaryData"),
            ),
            (
                json!({"data": {"a": big, "b": big}}),
                Err("Too long: may not be more than 1048576 bytes"),
            ),
        ];
        for (body, want) in cases {
            let got = prepare(&cm(body.clone()), None).map(|_| ());
            match (&got, want) {
                (Ok(()), Ok(())) => {}
                (Err(m), Err(part)) => assert!(m.contains(part), "{body}: {m}"),
                _ => panic!("{body}: {got:?}"),
            }
        }
    }

    #[test]
    fn immutable_config_maps_keep_their_data() {
        let old = prepare(&cm(json!({"immutable": true, "data": {"a": "1"}})), None).unwrap();
        let mut changed = old.clone();
        changed["data"]["a"] = json!("2");
        assert!(prepare(&changed, Some(&old))
            .unwrap_err()
            .contains("field is immutable"));
        let mut unset = old.clone();
        unset["immutable"] = json!(false);
        assert!(prepare(&unset, Some(&old)).is_err());
        let mut labelled = old.clone();
        labelled["metadata"]["labels"] = json!({"a": "b"});
        assert!(prepare(&labelled, Some(&old)).is_ok());
        let mutable = prepare(&cm(json!({"data": {"a": "1"}})), None).unwrap();
        assert!(prepare(&changed, Some(&mutable)).is_ok());
    }

    #[test]
    fn the_table_counts_both_bags() {
        let obj = cm(json!({"data": {"a": "1"}, "binaryData": {"b": "AA=="}}));
        let cells = CONFIG_MAPS.strategy.cells(&obj, Utc::now());
        assert_eq!(cells[1], json!(2));
    }
}
