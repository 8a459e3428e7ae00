//! v1 Secrets: what only admins read (a view token may not; a node only those its pods use). The
//! types kube-apiserver checks (`kubernetes.io/dockerconfigjson`, `tls`, `basic-auth`,
//! `ssh-auth`, `service-account-token`, ...) must hold their keys. They also hold the token
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

use super::configmap::{immutable_errors, key_errors, MAX_DATA_BYTES};
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

const COLUMNS: &[Column] = &[
    Column::NAME,
    Column::string("Type", 0),
    Column::integer("Data", 0),
    Column::AGE,
];

pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
pub const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
pub const SERVICE_ACCOUNT_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";

/// The keys a Secret of `type_` must hold (kube-apiserver's ValidateSecret), each with the JSON it
/// must be when it must be JSON.
fn type_errors(secret: &Secret) -> Vec<FieldError> {
    let data = secret.data.clone().unwrap_or_default();
    let has = |k: &str| data.contains_key(k);
    let mut errs = Vec::new();
    let mut require = |k: &str| {
        if !has(k) {
            errs.push(FieldError::required(&format!("data[{k}]"), ""));
        }
    };
    match secret.type_.as_deref().unwrap_or("Opaque") {
        SERVICE_ACCOUNT_TOKEN_TYPE => {
            let named = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SERVICE_ACCOUNT_NAME_ANNOTATION))
                .is_some_and(|n| !n.is_empty());
            if !named {
                errs.push(FieldError::required(
                    &format!("metadata.annotations[{SERVICE_ACCOUNT_NAME_ANNOTATION}]"),
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" => json_key(&data, ".dockercfg", &mut errs),
        DOCKER_CONFIG_JSON_TYPE => json_key(&data, DOCKER_CONFIG_JSON_KEY, &mut errs),
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(FieldError::required(
                "data[username]",
                "either username or password or both must be provided",
            ));
        }
        "kubernetes.io/ssh-auth" => require("ssh-privatekey"),
        "kubernetes.io/tls" => {
            require("tls.crt");
            require("tls.key");
        }
        _ => {}
    }
    errs
}

/// `key` must be there and hold a JSON object.
fn json_key(data: &BTreeMap<String, ByteString>, key: &str, errs: &mut Vec<FieldError>) {
    match data.get(key) {
        None => errs.push(FieldError::required(&format!("data[{key}]"), "")),
        Some(v) => {
            if let Err(e) = serde_json::from_slice::<serde_json::Map<String, Value>>(&v.0) {
                errs.push(FieldError::invalid(
                    &format!("data[{key}]"),
                    "<secret contents redacted>",
                    &e.to_string(),
                ));
            }
        }
    }
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
        let data = secret.data.as_ref();
        errs.extend(key_errors("data", data.into_iter().flat_map(|d| d.keys())));
        let size: usize = data.into_iter().flatten().map(|(_, v)| v.0.len()).sum();
        if size > MAX_DATA_BYTES {
            errs.push(FieldError::too_long("data", MAX_DATA_BYTES));
        }
        errs.extend(type_errors(secret));
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
        errs.extend(immutable_errors(
            old.immutable,
            secret.immutable,
            secret.data != old.data,
        ));
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

    #[test]
    fn typed_secrets_hold_their_keys() {
        let dockercfg = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            br#"{"auths":{"r":{"auth":"dTpw"}}}"#,
        );
        let secret = |t: &str, data: Value| json!({"metadata": {"name": "s", "namespace": "d"}, "type": t, "data": data});
        // (secret, accepted)
        let cases = [
            (
                secret(
                    DOCKER_CONFIG_JSON_TYPE,
                    json!({".dockerconfigjson": dockercfg}),
                ),
                true,
            ),
            (
                secret(
                    DOCKER_CONFIG_JSON_TYPE,
                    json!({".dockerconfigjson": "bm90IGpzb24="}),
                ),
                false,
            ),
            (secret(DOCKER_CONFIG_JSON_TYPE, json!({})), false),
            (
                secret(
                    "kubernetes.io/tls",
                    json!({"tls.crt": "YQ==", "tls.key": "YQ=="}),
                ),
                true,
            ),
            (
                secret("kubernetes.io/tls", json!({"tls.crt": "YQ=="})),
                false,
            ),
            (
                secret("kubernetes.io/basic-auth", json!({"password": "YQ=="})),
                true,
            ),
            (secret("kubernetes.io/basic-auth", json!({})), false),
            (secret("kubernetes.io/ssh-auth", json!({})), false),
            (secret(SERVICE_ACCOUNT_TOKEN_TYPE, json!({})), false),
            (
                secret("example.com/custom", json!({"anything": "YQ=="})),
                true,
            ),
        ];
        for (obj, ok) in cases {
            assert_eq!(prepare(&obj, None).is_ok(), ok, "{obj}");
        }
    }
}
