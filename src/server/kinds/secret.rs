//! v1 Secrets: what only admins read (a view token and the nodes may not). They hold the token
//! records (`auth::tokens`): a Secret of type `daemonset-agent.io/token` written with a plain
//! `token-secret` is stored with its SHA-256 instead, so no token is ever kept in clear.
//! `stringData` is merged into `data` as kube-apiserver does; `type` is immutable, and so is all
//! of an `immutable: true` Secret.
use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use serde_json::{json, Value};

use crate::core::credential::Token;
use crate::core::names;
use crate::core::validation::{validate_object_meta, FieldError};
use crate::server::auth::tokens::{SECRET_HASH_KEY, SECRET_KEY, TOKEN_TYPE};
use crate::server::resources::{Resource, ALL_VERBS};
use crate::server::strategy::{Column, Kind};
use crate::server::table::{age, name, s};

pub static SECRETS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "secrets",
    singular: "secret",
    kind: "Secret",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    strategy: &SecretStrategy,
};

struct SecretStrategy;

/// kube-apiserver's limit on one Secret's data.
const MAX_SECRET_BYTES: usize = 1024 * 1024;

const COLUMNS: &[Column] = &[
    Column::NAME,
    Column::string("Type", 0),
    Column::integer("Data", 0),
    Column::AGE,
];

fn is_config_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[async_trait]
impl Kind for SecretStrategy {
    type Object = Secret;

    fn default(&self, secret: &mut Secret) {
        if let Some(string_data) = secret.string_data.take() {
            let data = secret.data.get_or_insert_with(BTreeMap::new);
            for (k, v) in string_data {
                data.insert(k, ByteString(v.into_bytes()));
            }
        }
        if secret.type_.as_deref().unwrap_or("").is_empty() {
            secret.type_ = Some("Opaque".into());
        }
        if secret.type_.as_deref() == Some(TOKEN_TYPE) {
            if let Some(data) = secret.data.as_mut() {
                if let Some(plain) = data.remove(SECRET_KEY) {
                    let token = Token {
                        id: String::new(),
                        secret: String::from_utf8_lossy(&plain.0).into_owned(),
                    };
                    data.insert(
                        SECRET_HASH_KEY.into(),
                        ByteString(token.secret_hash().into_bytes()),
                    );
                }
            }
        }
    }
    fn validate(&self, secret: &Secret) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&secret.metadata, true, names::is_dns1123_subdomain);
        let mut size = 0;
        for (k, v) in secret.data.iter().flatten() {
            size += v.0.len();
            if !is_config_key(k) {
                errs.push(FieldError::invalid(
                    &format!("data[{k}]"),
                    &format!("{k:?}"),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                ));
            }
        }
        if size > MAX_SECRET_BYTES {
            errs.push(FieldError::too_long("data", MAX_SECRET_BYTES));
        }
        errs
    }
    fn validate_update(&self, secret: &Secret, old: &Secret) -> Vec<FieldError> {
        let mut errs = self.validate(secret);
        if secret.type_ != old.type_ {
            errs.push(FieldError::invalid(
                "type",
                &format!("{:?}", secret.type_.as_deref().unwrap_or("")),
                "field is immutable",
            ));
        }
        if old.immutable == Some(true)
            && (secret.data != old.data || secret.immutable != old.immutable)
        {
            errs.push(FieldError::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
        errs
    }
    fn status_fields(&self) -> &'static [&'static str] {
        &[]
    }
    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let count = obj
            .get("data")
            .and_then(Value::as_object)
            .map_or(0, |d| d.len());
        vec![
            name(obj),
            json!(s(obj, "/type")),
            json!(count),
            json!(age(obj, now)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::query::FieldValidation;
    use crate::server::strategy::Prepare;

    fn prepare(obj: &Value, old: Option<&Value>) -> Result<Value, u16> {
        SECRETS
            .strategy
            .prepare(
                obj,
                Prepare {
                    resource: &SECRETS,
                    old,
                    validation: FieldValidation::Strict,
                    policy: None,
                },
            )
            .map(|p| p.object)
            .map_err(|e| e.code)
    }

    #[test]
    fn string_data_merges_and_token_secrets_are_stored_hashed() {
        let plain = json!({"metadata": {"name": "s", "namespace": "d"},
            "data": {"a": "YQ=="}, "stringData": {"b": "bee"}});
        let got = prepare(&plain, None).unwrap();
        assert_eq!(got["data"], json!({"a": "YQ==", "b": "YmVl"}));
        assert_eq!(got["type"], "Opaque");
        assert!(got.get("stringData").is_none());

        let token = json!({"metadata": {"name": "token-abcdef", "namespace": "kube-system"},
            "type": TOKEN_TYPE, "stringData": {"token-id": "abcdef", "token-secret": "0123456789abcdef"}});
        let got = prepare(&token, None).unwrap();
        assert!(got["data"].get("token-secret").is_none(), "{got}");
        let hash = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            got["data"][SECRET_HASH_KEY].as_str().unwrap(),
        )
        .unwrap();
        let want = Token {
            id: "abcdef".into(),
            secret: "0123456789abcdef".into(),
        }
        .secret_hash();
        assert_eq!(String::from_utf8(hash).unwrap(), want);
    }

    #[test]
    fn keys_type_and_immutable_secrets_are_checked() {
        let bad = json!({"metadata": {"name": "s", "namespace": "d"}, "data": {"a/b": "YQ=="}});
        assert_eq!(prepare(&bad, None), Err(422));
        let old = prepare(&json!({"metadata": {"name": "s", "namespace": "d"}, "immutable": true, "data": {"a": "YQ=="}}), None).unwrap();
        let mut changed = old.clone();
        changed["data"]["a"] = json!("Yg==");
        assert_eq!(prepare(&changed, Some(&old)), Err(422));
        let mut retyped = old.clone();
        retyped["type"] = json!("kubernetes.io/tls");
        assert_eq!(prepare(&retyped, Some(&old)), Err(422));
        assert!(prepare(&old, Some(&old)).is_ok());
    }
}
